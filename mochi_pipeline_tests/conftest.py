"""Shared fixtures: real git repositories and per-test artifact roots."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

# The whole session is offline, as CI is: a test that reaches for the Hub fails instead of passing on a 404.
# Set before anything imports huggingface_hub, which reads these once.
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

import pytest

from mochi_pipeline.config import parse_config
from mochi_pipeline_tests.repo_factory import make_sample_repo


def pytest_configure(config):
    """The session's own build cache (tiny base, test models, llama.cpp's converter), never the user's.

    ``$MOCHI_TEST_CACHE``, default ``.mochi-test-cache/`` in the checkout: kept between runs (every build in
    it is keyed by the code that makes it, so a warm cache never hides a change) and set as ``$MOCHI_CACHE``
    for this process and every ``mochi`` it starts. A ``$MOCHI_CACHE`` of the user's is ignored here.
    """
    root = Path(os.environ.get("MOCHI_TEST_CACHE") or config.rootpath / ".mochi-test-cache").resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.environ["MOCHI_CACHE"] = str(root)


def pytest_collection_modifyitems(config, items):
    import torch

    missing = [why for why, absent in (("a CUDA GPU", not torch.cuda.is_available()),
                                       ("bitsandbytes (pip install -e .[gpu])",
                                        importlib.util.find_spec("bitsandbytes") is None)) if absent]
    if not missing:
        return
    skip = pytest.mark.skip(reason="needs " + " and ".join(missing))
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_repo(tmp_path_factory) -> Path:
    """A real repository (read-only for tests: copy it before changing it)."""
    return make_sample_repo(tmp_path_factory.mktemp("repos"))


@pytest.fixture
def sample_config(sample_repo, tmp_path):
    """A config for ``sample_repo`` with artifacts under this test's tmp_path."""
    return parse_config({"repo": {"source": str(sample_repo)}, "artifacts_root": str(tmp_path / "artifacts")}, tmp_path)
