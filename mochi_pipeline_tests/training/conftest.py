"""Fixtures of the training tests: the tiny base (built once, small budget) and a small project dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from mochi_pipeline.training.base_models import resolve_base
from mochi_pipeline_tests.training.store_project import TEST_TINY_STEPS, make_store_dataset


@pytest.fixture(scope="session")
def store_dataset(tmp_path_factory) -> Path:
    return make_store_dataset(tmp_path_factory.mktemp("store_dataset"))


@pytest.fixture(scope="session")
def tiny_base():
    """The tiny base with the test pre-training budget (cached under $MOCHI_CACHE across sessions)."""
    return resolve_base("tiny", TEST_TINY_STEPS)


@pytest.fixture(scope="session")
def gemma_base():
    """The real Gemma 3 270M base, converted once from its PyPI package into $MOCHI_CACHE (about a minute)."""
    return resolve_base("gemma3-270m", TEST_TINY_STEPS)
