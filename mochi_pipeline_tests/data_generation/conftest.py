"""The data-generation tests' input: the sample repository through the real ingestion and preprocessing layers."""

from __future__ import annotations

import pytest

from mochi_pipeline_tests.data_generation.upstream import Upstream, materialize_upstream


@pytest.fixture(scope="session")
def upstream(sample_repo, tmp_path_factory) -> Upstream:
    return materialize_upstream(sample_repo, tmp_path_factory.mktemp("upstream"))
