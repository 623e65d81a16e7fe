"""The new-commit sensor and the nightly schedule, on a real repository."""

from __future__ import annotations

import shutil

import dagster as dg

from mochi_pipeline.automation import new_commit_sensor, nightly_retrain_schedule
from mochi_pipeline.definitions import defs
from mochi_pipeline.resources import MochiProject
from mochi_pipeline_tests.repo_factory import commit, git


def test_sensor_requests_one_run_per_new_commit(sample_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    (tmp_path / "mochi.yaml").write_text(f"repo:\n  source: {repo}\nartifacts_root: {tmp_path / 'art'}\n")
    project = MochiProject(config_path=str(tmp_path / "mochi.yaml"))
    head = git(repo, "rev-parse", "HEAD")

    with dg.build_sensor_context(cursor=None, resources={"project": project}) as ctx:
        result = new_commit_sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    assert [r.run_key for r in result.run_requests] == [head]
    assert result.cursor == head
    assert result.asset_events[0].tags["dagster/data_version"] == head

    with dg.build_sensor_context(cursor=head, resources={"project": project}) as ctx:
        assert isinstance(new_commit_sensor(ctx), dg.SkipReason)

    new = commit(repo, "Add extra", "2024-07-01T00:00:00+00:00", {"pkg/extra.py": "X = 1\n"})
    with dg.build_sensor_context(cursor=head, resources={"project": project}) as ctx:
        result = new_commit_sensor(ctx)
    assert [r.run_key for r in result.run_requests] == [new]


def test_sensor_skips_with_the_reason_when_the_repository_is_unreadable(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "mochi.yaml").write_text(f"repo:\n  source: {tmp_path / 'plain'}\n")
    project = MochiProject(config_path=str(tmp_path / "mochi.yaml"))
    with dg.build_sensor_context(cursor=None, resources={"project": project}) as ctx:
        result = new_commit_sensor(ctx)
    assert isinstance(result, dg.SkipReason) and "not a git repository" in result.skip_message


def test_jobs_split_data_refresh_from_expensive_training():
    graph = defs.resolve_asset_graph()
    data_job = defs.resolve_job_def("data_refresh_job")
    retrain_job = defs.resolve_job_def("retrain_job")
    data_keys = set(data_job.asset_layer.executable_asset_keys)
    model_keys = set(retrain_job.asset_layer.executable_asset_keys)
    assert dg.AssetKey("training_dataset") in data_keys and dg.AssetKey("fine_tuned_adapter") not in data_keys
    assert dg.AssetKey("fine_tuned_adapter") in model_keys and dg.AssetKey("source_files") not in model_keys
    assert data_keys | model_keys == set(graph.materializable_asset_keys)
    assert nightly_retrain_schedule.cron_schedule == "0 3 * * *"
