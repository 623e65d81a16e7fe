"""Automation on a real repository: the commit sensor, and the declarative conditions evaluated by Dagster.

The conditions are evaluated with Dagster's own test helper (``evaluate_automation_conditions``)
against a real instance holding real materializations; ticks get explicit times, so the nightly
retraining is checked at, before and after its cron tick.
"""

from __future__ import annotations

import datetime as dt
import shutil

import dagster as dg
import pytest

from mochi_pipeline.definitions import build_defs
from mochi_pipeline.incremental import DATA_VERSION_TAG
from mochi_pipeline_tests.materialize import DATA_ASSETS as DATA
from mochi_pipeline_tests.materialize import materialize, project_config
from mochi_pipeline_tests.repo_factory import commit, git
from mochi_pipeline_tests.sensor_ticks import sensor_tick
from mochi_pipeline_tests.training.store_project import TINY_BASE

# Fed by the trackers and CI systems, not by the repository.
TRACKER_SIDE = {"issue_threads", "ci_failures", "clean_issue_threads", "clean_ci_failures"}
AFTER_TRAINING = {"evaluation_report", "merged_model", "gguf_model", "gguf_lora_adapter", "ollama_modelfile",
                  "assist_evaluation", "completion_evaluation"}
HELPER = '''def scale(values, factor):
    """Multiply every value by ``factor``."""
    scaled = []
    for value in values:
        scaled.append(value * factor)
    return scaled
'''


@pytest.fixture
def repo(sample_repo, tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(sample_repo, copy)
    return copy


def requested(result) -> set[str]:
    return {key.to_user_string() for key in result._requested_partitions_by_asset_key}  # noqa: SLF001


def test_commit_sensor_records_each_new_commit_once(repo, tmp_path):
    defs = build_defs(project_config(tmp_path, repo={"source": str(repo)}))
    instance = dg.DagsterInstance.ephemeral()
    head = git(repo, "rev-parse", "HEAD")
    first = sensor_tick(defs, instance, None)
    assert first.cursor == head and not first.run_requests
    assert first.asset_events[0].tags[DATA_VERSION_TAG] == head
    assert isinstance(sensor_tick(defs, instance, head), dg.SkipReason)
    new = commit(repo, "Add extra", "2024-07-01T00:00:00+00:00", {"pkg/extra.py": "X = 1\n"})
    assert sensor_tick(defs, instance, head).cursor == new
    latest = instance.fetch_observations(dg.AssetKey("git_repository"), limit=1).records[0]
    assert latest.asset_observation.tags[DATA_VERSION_TAG] == new


def test_commit_sensor_skips_with_the_reason_when_the_repository_is_unreadable(tmp_path):
    (tmp_path / "plain").mkdir()
    defs = build_defs(project_config(tmp_path, repo={"source": str(tmp_path / "plain")}))
    result = sensor_tick(defs, dg.DagsterInstance.ephemeral(), None)
    assert isinstance(result, dg.SkipReason) and "not a git repository" in result.skip_message


def test_data_assets_follow_a_new_commit_once_each_and_rest_otherwise(repo, tmp_path):
    cfg = project_config(tmp_path, repo={"source": str(repo)})
    defs = build_defs(cfg)
    instance = dg.DagsterInstance.ephemeral()
    cursor = sensor_tick(defs, instance, None).cursor
    assert materialize(cfg, DATA, instance=instance).success
    data = dg.AssetSelection.groups("ingestion", "preprocessing", "data_generation")

    def tick(cursor=None):
        return dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=data, cursor=cursor)

    result = tick()
    assert requested(result) == set()
    result = tick(result.cursor)
    assert requested(result) == set()  # nothing changed: nothing to do

    # A commit in a new directory: its partition is added, and the chain below the commit is built in three
    # requests, each asset once: what is above code_chunks (Dagster never runs it in the same run as its
    # unpartitioned parents), then code_chunks, then what is below it.
    commit(repo, "Add a scaling helper", "2024-07-01T00:00:00+00:00", {"lib/scale.py": HELPER})
    sensor_tick(defs, instance, cursor)
    below = {"deduplicated_chunks", "completion_pairs", "doc_code_pairs", "qa_pairs", "training_dataset"}
    waves = [set(DATA) - TRACKER_SIDE - below - {"code_chunks"}, {"code_chunks"}, below]
    for wave in waves:
        result = tick(result.cursor)
        assert requested(result) == wave
        if wave == {"code_chunks"}:
            partitions = set(result._requested_partitions_by_asset_key[dg.AssetKey("code_chunks")])  # noqa: SLF001
            assert partitions == set(instance.get_dynamic_partitions("code_directories")) and "lib" in partitions
        assert materialize(cfg, [name for name in DATA if name in wave], instance=instance).success
    assert requested(tick(result.cursor)) == set()  # each was requested once
    # The daemon launches such a request as one backfill (Dagster's test helper above evaluates without).
    assert defs.resolve_sensor_def("data_automation_sensor").emit_backfills


def test_training_follows_a_changed_dataset_at_most_once_per_night(repo, tmp_path):
    cfg = project_config(tmp_path, repo={"source": str(repo)},
                         training=TINY_BASE,
                         automation={"retrain_cron": "0 3 * * *", "timezone": "UTC"})
    defs = build_defs(cfg)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize(cfg, [*DATA, "base_model"], instance=instance).success
    models = dg.AssetSelection.groups("training", "deployment")
    night = dt.datetime.combine(dt.date.today() + dt.timedelta(days=2), dt.time(4), tzinfo=dt.UTC)

    def tick_at(when: dt.datetime, cursor=None):
        return dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=models,
                                                 evaluation_time=when, cursor=cursor)

    cursor = sensor_tick(defs, instance, None).cursor
    tick = tick_at(night)
    assert requested(tick) == set()
    # The dataset changes in the day: nothing until the next 03:00 has passed.
    commit(repo, "Add a scaling helper", "2024-07-01T00:00:00+00:00", {"pkg/scale.py": HELPER})
    sensor_tick(defs, instance, cursor)
    assert materialize(cfg, DATA, instance=instance).success
    tick = tick_at(night + dt.timedelta(hours=8), tick.cursor)
    assert requested(tick) == set()
    tick = tick_at(night + dt.timedelta(hours=23, minutes=30), tick.cursor)
    assert requested(tick) == {"fine_tuned_adapter"} | AFTER_TRAINING  # training, then evaluation and export
    # The next night, with the dataset unchanged since: nothing.
    tick = tick_at(night + dt.timedelta(days=2), tick.cursor)
    assert requested(tick) == set()


def test_each_automation_can_be_switched_off_in_mochi_yaml(repo, tmp_path):
    cfg = project_config(tmp_path, repo={"source": str(repo)},
                         automation={"follow_commits": False, "retrain_cron": "", "export_after_training": False})
    graph = build_defs(cfg).resolve_asset_graph()
    assert all(graph.get(k).automation_condition is None for k in graph.materializable_asset_keys)
    on = build_defs(project_config(tmp_path, repo={"source": str(repo)})).resolve_asset_graph()
    assert all(on.get(k).automation_condition is not None for k in on.materializable_asset_keys)
