"""Shared fixtures: real git repositories and per-test artifact roots."""

from __future__ import annotations

from pathlib import Path

import pytest

from mochi_pipeline.config import parse_config
from mochi_pipeline_tests.repo_factory import make_sample_repo


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
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
