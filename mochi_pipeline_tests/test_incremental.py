"""Incremental rebuilds on the data assets of the sample repository, judged by Dagster's own staleness.

A mochi.yaml edit changes the code version of the assets that read it and of everything below
them; a run over that chain recomputes what reads the edit and reuses whatever else found its
inputs unchanged, so an unchanged output stops propagation.
"""

from __future__ import annotations

import dagster as dg
import pytest

from mochi_pipeline.dagster_internals import FRESH, STALE, asset_statuses
from mochi_pipeline.definitions import build_defs
from mochi_pipeline.incremental import FORCE_TAG, REUSED_KEY, own_version
from mochi_pipeline_tests.materialize import DATA_ASSETS as DATA
from mochi_pipeline_tests.materialize import materialize, project_config

BELOW_CHUNKING = {"code_chunks", "deduplicated_chunks", "completion_pairs", "doc_code_pairs", "qa_pairs",
                  "training_dataset"}


def code_versions(cfg) -> dict[str, str]:
    graph = build_defs(cfg).resolve_asset_graph()
    return {k.to_user_string(): graph.get(k).code_version for k in graph.materializable_asset_keys}


def data_statuses(cfg, instance) -> dict[str, str]:
    return {k.to_user_string(): s.status for k, s in asset_statuses(build_defs(cfg), instance).items()
            if k.to_user_string() in DATA}


def last_materialization(instance, name: str) -> dg.AssetMaterialization:
    return instance.get_latest_materialization_event(dg.AssetKey(name)).asset_materialization


@pytest.fixture
def built(sample_repo, tmp_path):
    """The data assets materialized once on a real instance."""
    cfg = project_config(tmp_path, repo={"source": str(sample_repo)})
    instance = dg.DagsterInstance.ephemeral()
    assert materialize(cfg, DATA, instance=instance).success
    return cfg, instance, tmp_path


def edited(tmp_path, sample_repo, **sections):
    return project_config(tmp_path, repo={"source": str(sample_repo)}, **sections)


def test_code_versions_carry_the_settings_read_above(sample_repo, tmp_path):
    before = code_versions(edited(tmp_path, sample_repo))
    after = code_versions(edited(tmp_path, sample_repo, chunking={"max_tokens": 300}))
    changed = {name for name in before if before[name] != after[name]}
    assert BELOW_CHUNKING <= changed
    assert "source_files" not in changed and "commit_pairs" not in changed and "doc_sections" not in changed
    assert {name for name in changed if own_version(before[name]) != own_version(after[name])} == {"code_chunks"}


def test_a_settings_edit_makes_its_readers_and_everything_below_them_stale(built, sample_repo):
    cfg, instance, tmp_path = built
    assert set(data_statuses(cfg, instance).values()) == {FRESH}
    statuses = data_statuses(edited(tmp_path, sample_repo, chunking={"max_tokens": 300}), instance)
    assert {name for name, status in statuses.items() if status == STALE} == BELOW_CHUNKING
    assert {name for name, status in statuses.items() if status == FRESH} == set(DATA) - BELOW_CHUNKING


def test_an_unchanged_output_stops_propagation(built, sample_repo):
    cfg, instance, tmp_path = built
    dataset_run = instance.get_latest_materialization_event(dg.AssetKey("training_dataset")).run_id
    # Fewer subjects than the sample repository has named definitions: qa_pairs recomputes, to the same pairs.
    quieter = edited(tmp_path, sample_repo, generation={"qa": {"max_subjects": 400}})
    assert data_statuses(quieter, instance)["training_dataset"] == STALE
    result = materialize(quieter, ["qa_pairs", "training_dataset"], instance=instance)
    qa = last_materialization(instance, "qa_pairs")
    dataset = last_materialization(instance, "training_dataset")
    assert REUSED_KEY not in qa.metadata  # what reads the edit is recomputed...
    assert dataset.metadata[REUSED_KEY].value == dataset_run  # ...and what only reads its (same) output is reused
    assert {c.check_name for c in result.get_asset_check_evaluations()} >= {"schema_valid", "no_train_eval_overlap"}
    assert set(data_statuses(quieter, instance).values()) == {FRESH}

    forced = materialize(quieter, ["training_dataset"], instance=instance, tags={FORCE_TAG: "true"})
    assert forced.success and REUSED_KEY not in last_materialization(instance, "training_dataset").metadata
