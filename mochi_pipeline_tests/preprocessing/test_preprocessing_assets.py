"""The preprocessing assets materialized on the sample repository from the real code location."""

from __future__ import annotations

import dagster as dg

from mochi_pipeline.incremental import FORCE_TAG
from mochi_pipeline.io_manager import read_asset_file
from mochi_pipeline.preprocessing.minhash import text_key
from mochi_pipeline.records import Chunk, DocSection
from mochi_pipeline_tests.materialize import chunks_of, materialize, project_config

ASSETS = ["source_files", "clean_files", "doc_sections", "code_chunks", "deduplicated_chunks"]


def _metadata(result: dg.ExecuteInProcessResult, key: str) -> dict:
    """The metadata of ``key``'s materialization (of its first partition, for code_chunks: the run's totals)."""
    event = result.asset_materializations_for_node(key)[0]
    return {k: v.value for k, v in event.metadata.items()}


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_materialize_preprocessing_on_sample_repo(sample_repo, tmp_path):
    # HEAD~1: before clamp() in pkg/util.py changed, so pkg/dup.py holds an exact and a near copy.
    cfg = project_config(tmp_path, repo={"source": str(sample_repo), "rev": "HEAD~1"}, chunking={"min_tokens": 8})
    result = materialize(cfg, ASSETS)
    assert result.success
    assert _checks(result) == {"source_files_found": True, "clean_files_found": True,
                               "code_chunks_cover_every_directory": True}

    stored = tmp_path / "artifacts" / "assets"
    chunks = chunks_of(result)
    assert all(isinstance(c, Chunk) for c in chunks)
    assert read_asset_file(stored / "code_chunks" / "pkg.jsonl") == [c for c in chunks if c.path.startswith("pkg/")]
    partitions = sorted(e.partition for e in result.asset_materializations_for_node("code_chunks"))
    assert partitions == ["c", "cpp", "go", "java/sample", "pkg", "rust", "tests", "web"]
    assert {c.language for c in chunks} == {"python", "javascript", "typescript", "java", "go", "rust", "c", "cpp"}
    distance = next(c for c in chunks if c.symbol == "Point.distance_to")
    assert (distance.path, distance.start_line, distance.end_line) == ("pkg/core.py", 14, 16)
    assert distance.file_date.startswith("2024-01-01") and len(distance.file_sha) == 40
    assert "import math" in distance.context

    meta = _metadata(result, "code_chunks")
    assert meta["cache_hits"] == 0 and meta["partitions_in_run"] == 8 and meta["reused_partitions"] == 0
    assert meta["skipped_files_by_reason"] == {"documentation": 3, "excluded_language:text": 2}
    by_partition = {e.partition: {k: v.value for k, v in e.metadata.items()}
                    for e in result.asset_materializations_for_node("code_chunks")}
    assert by_partition["pkg"]["chunks"] == len([c for c in chunks if c.path.startswith("pkg/")])
    assert by_partition["pkg"]["chunks_by_language"] == {"python": by_partition["pkg"]["chunks"]}
    assert sum(m["chunks"] for m in by_partition.values()) == len(chunks)
    assert sum(m["files"] for m in by_partition.values()) == 12

    kept = read_asset_file(stored / "deduplicated_chunks.jsonl")
    dedup = _metadata(result, "deduplicated_chunks")
    assert dedup["dropped_by_reason"]["exact"] >= 1 and dedup["dropped_by_reason"]["near"] >= 1
    assert dedup["kept"] == len(kept) == len(chunks) - sum(dedup["dropped_by_reason"].values())
    assert dedup["cluster_size_histogram"]["2"] >= 2
    assert len({text_key(c.text) for c in kept}) == len(kept)
    symbols = {(c.path, c.symbol) for c in kept}
    assert ("pkg/dup.py", "clamp") in symbols and ("pkg/util.py", "clamp") not in symbols

    sections = read_asset_file(stored / "doc_sections.jsonl")
    assert all(isinstance(s, DocSection) for s in sections)
    assert {s.path for s in sections} == {"README.md", "docs/guide.rst", "docs/notes.adoc"}
    assert not any("shields.io" in s.text for s in sections)
    assert _metadata(result, "doc_sections")["skipped_files_by_reason"] == {"not_documentation": 14}

    # A second run, forced to recompute, parses nothing (per-blob cache) and yields the same data versions.
    again = materialize(cfg, ASSETS, tags={FORCE_TAG: "true"})
    assert _metadata(again, "code_chunks")["cache_hits"] == 12
    versions = [{e.asset_key.path[-1]: e.tags["dagster/data_version"]
                 for e in r.get_asset_materialization_events()
                 for e in [e.event_specific_data.materialization]} for r in (result, again)]
    assert versions[0] == versions[1]


def test_the_file_checks_fail_when_nothing_is_left_to_learn_from(sample_repo, tmp_path):
    # A glob that matches nothing in this repository (a typo'd extension).
    cfg = project_config(tmp_path / "a", repo={"source": str(sample_repo)}, sources={"include": ["**/*.pyy"]})
    result = materialize(cfg, ["source_files", "clean_files"], raise_on_error=False)
    assert _checks(result) == {"source_files_found": False, "clean_files_found": False}
    # Files found, but all of them someone else's code by the filters (every top directory named vendored).
    dirs = sorted({p.parts[0] for p in sample_repo.rglob("*") if p.is_file() and ".git" not in p.parts
                   and len(p.relative_to(sample_repo).parts) > 1 for p in [p.relative_to(sample_repo)]})
    cfg = project_config(tmp_path / "b", repo={"source": str(sample_repo)},
                         sources={"include": [f"{d}/**" for d in dirs]}, filters={"vendored_dirs": dirs})
    result = materialize(cfg, ["source_files", "clean_files"], raise_on_error=False)
    assert _checks(result) == {"source_files_found": True, "clean_files_found": False}
