"""Jobs, the nightly retrain schedule and the new-commit sensor.

Data refresh (ingestion → dataset) is cheap and follows commits; training and export are
expensive and run on their own schedule, so each can be switched off alone in the UI.
"""

from __future__ import annotations

import dagster as dg

from mochi_pipeline.ingestion.git_connector import GitError, open_repository
from mochi_pipeline.resources import MochiProject

DATA_GROUPS = ("ingestion", "preprocessing", "data_generation")
MODEL_GROUPS = ("training", "deployment")

data_refresh_job = dg.define_asset_job(
    "data_refresh_job",
    selection=dg.AssetSelection.groups(*DATA_GROUPS),
    description="Re-read the repository and rebuild the training dataset.",
)
retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=dg.AssetSelection.groups(*MODEL_GROUPS),
    description="Fine-tune on the current dataset, evaluate, merge and export.",
)

nightly_retrain_schedule = dg.ScheduleDefinition(
    name="nightly_retrain_schedule",
    job=retrain_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Retrain and re-export every night at 03:00 UTC (turn on in the UI).",
)


@dg.sensor(
    job=data_refresh_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Rebuilds the dataset when repo.rev points at a new commit; the cursor is the last SHA seen.",
)
def new_commit_sensor(context: dg.SensorEvaluationContext, project: MochiProject) -> dg.SensorResult | dg.SkipReason:
    cfg = project.config
    try:
        sha = open_repository(cfg.repo_source, project.artifacts / "repos").resolve_rev(cfg.repo.rev)
    except GitError as err:
        return dg.SkipReason(f"Cannot read the repository: {err}")
    if sha == context.cursor:
        return dg.SkipReason(f"No new commit on {cfg.repo.rev} (still {sha[:12]}).")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=sha, tags={"mochi/commit": sha})],
        cursor=sha,
        # Record the new data version of the source so downstream assets show as stale at once.
        asset_events=[dg.AssetObservation("git_repository", tags={"dagster/data_version": sha})],
    )


defs = dg.Definitions(
    jobs=[data_refresh_job, retrain_job],
    schedules=[nightly_retrain_schedule],
    sensors=[new_commit_sensor],
)
