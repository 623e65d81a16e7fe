"""The sample repository's upstream records (Chunk, DocSection, Commit), made by the real layers.

The data-generation tests read what the pipeline itself gives them: ``source_files`` → ``clean_files`` →
``code_chunks``, ``doc_sections`` and ``commit_history`` → ``clean_commits``, materialized once per session on the
sample repository (``conftest.py``'s ``upstream`` fixture). Chunks are taken before deduplication: the sample
repository plants near-duplicates for the dedup tests, and the generators' tests want every definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mochi_pipeline.records import Chunk, Commit, DocSection
from mochi_pipeline_tests.materialize import chunks_of, materialize, project_config

ASSETS = ["source_files", "commit_history", "clean_files", "clean_commits", "doc_sections", "code_chunks"]


@dataclass(frozen=True)
class Upstream:
    chunks: list[Chunk]
    docs: list[DocSection]
    commits: list[Commit]


def materialize_upstream(repo: Path, tmp_path: Path) -> Upstream:
    result = materialize(project_config(tmp_path, repo={"source": str(repo)}), ASSETS)
    assert result.success
    return Upstream(chunks=chunks_of(result), docs=result.output_for_node("doc_sections"),
                    commits=result.output_for_node("clean_commits"))
