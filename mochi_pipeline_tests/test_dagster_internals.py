"""What mochi relies on from dagster._core, pinned so a Dagster upgrade that changes it fails here first."""

from __future__ import annotations

import shutil

import dagster as dg

from mochi_pipeline.dagster_internals import (
    FRESH,
    MISSING,
    STALE,
    asset_statuses,
    descendants,
    partitions_data_version,
)
from mochi_pipeline.definitions import build_defs
from mochi_pipeline.ingestion.assets import observe_commit, record_commit
from mochi_pipeline_tests.materialize import code_partitions, materialize, project_config
from mochi_pipeline_tests.repo_factory import commit

INGESTION_AND_PREPROCESSING = ["source_files", "commit_history", "clean_files", "doc_sections", "code_chunks",
                               "deduplicated_chunks"]


def test_stale_status_is_one_level_deep_and_mochi_adds_the_rest(sample_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    cfg = project_config(tmp_path, repo={"source": str(repo)})
    defs = build_defs(cfg)
    instance = dg.DagsterInstance.ephemeral()
    # The run's first step records the first observation; the provenance it stores still names it.
    assert materialize(cfg, INGESTION_AND_PREPROCESSING, instance=instance).success
    statuses = {k.to_user_string(): s for k, s in asset_statuses(defs, instance).items()}
    assert {statuses[name].status for name in INGESTION_AND_PREPROCESSING} == {FRESH}
    assert statuses["training_dataset"].status == MISSING and statuses["training_dataset"].needs_run

    commit(repo, "Add extra", "2024-07-01T00:00:00+00:00", {"pkg/extra.py": "def extra():\n    return 2\n"})
    record_commit(instance, *observe_commit(cfg.repo, cfg.paths))
    statuses = {k.to_user_string(): s for k, s in asset_statuses(defs, instance).items()}
    # Dagster: only the direct children of the repository are stale ...
    assert statuses["source_files"].status == statuses["commit_history"].status == STALE
    assert statuses["code_chunks"].status == statuses["deduplicated_chunks"].status == FRESH
    # ... mochi: everything below them has to run too.
    assert "source_files" in statuses["deduplicated_chunks"].upstream_changed
    assert all(statuses[name].needs_run for name in INGESTION_AND_PREPROCESSING)


def test_descendants_follow_the_graph(sample_repo, tmp_path):
    graph = build_defs(project_config(tmp_path, repo={"source": str(sample_repo)})).resolve_asset_graph()
    below = {k.to_user_string() for k in descendants(graph, dg.AssetKey("evaluation_report"))}
    assert below == {"merged_model", "gguf_lora_adapter", "gguf_model", "ollama_modelfile", "assist_evaluation",
                     "completion_evaluation"}


def test_a_partitioned_asset_has_its_partitions_status_and_the_input_version_dagster_records(sample_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    cfg = project_config(tmp_path, repo={"source": str(repo)})
    defs = build_defs(cfg)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize(cfg, INGESTION_AND_PREPROCESSING, instance=instance).success
    chunks = dg.AssetKey("code_chunks")
    partitions = list(instance.get_dynamic_partitions("code_directories"))
    # What an unpartitioned asset reading every partition records as its input's version (deduplicated_chunks).
    dedup = instance.get_latest_materialization_event(dg.AssetKey("deduplicated_chunks")).asset_materialization
    assert dedup.tags[f"dagster/input_data_version/{chunks.to_user_string()}"] == \
        partitions_data_version(instance, chunks, partitions)
    assert asset_statuses(defs, instance)[chunks].partitions == {p: FRESH for p in partitions}

    # A new directory: its partition is missing (the asset is), the others are stale once clean_files changed.
    commit(repo, "Add a plugin", "2024-07-01T00:00:00+00:00", {"plugins/csv/reader.py": "def read():\n    return 1\n"})
    record_commit(instance, *observe_commit(cfg.repo, cfg.paths))
    code_partitions(cfg, instance)
    assert materialize(cfg, ["source_files", "clean_files"], instance=instance).success
    status = asset_statuses(defs, instance)[chunks]
    assert status.status == MISSING and status.partitions["plugins/csv"] == MISSING
    assert {status.partitions[p] for p in partitions} == {STALE}
    assert status.causes[0] == "1 of 9 partitions never materialized: plugins/csv"
    assert status.causes[1].startswith("8 of 9 partitions stale: ")
    assert "clean_files" in status.causes[2]
