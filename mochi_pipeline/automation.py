"""What runs by itself once its sensors are on (Dagster UI → Automation; all start stopped).

- ``new_commit_sensor`` looks at repo.rev every ``automation.poll_interval_s`` and records a new
  commit as an observation of ``git_repository`` (no run of its own).
- ``tracker_sensor`` looks at the configured issue trackers and CI systems every
  ``automation.tracker_poll_interval_s`` and records their activity as an observation of
  ``tracker_activity`` when it changed.
- ``data_automation_sensor`` evaluates the data assets' conditions: an asset runs when what it reads
  got a new data version, and the whole chain below a new commit goes in one run.
- ``model_automation_sensor``: training follows a changed dataset, at most once per tick of
  ``automation.retrain_cron``; evaluation (the quality gate) and export follow a new model.
Each can be switched off alone, in the UI or in mochi.yaml. A re-materialization that kept its data
version (an unchanged result) triggers nothing below it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import dagster as dg

from mochi_pipeline.config import AutomationSettings
from mochi_pipeline.incremental import DATA_VERSION_TAG
from mochi_pipeline.ingestion.assets import (
    ACTIVITY,
    REPOSITORY,
    MissingToken,
    observe_activity,
    observe_commit,
    service_resources,
)
from mochi_pipeline.ingestion.settings import CISettings, RepoSettings, TrackerSettings
from mochi_pipeline.paths import ProjectPaths

AC = dg.AutomationCondition
DATA_GROUPS = ("ingestion", "preprocessing", "data_generation")
MODEL_GROUPS = ("training", "deployment")
TRAINING_ASSETS = ("base_model", "fine_tuned_adapter")


def _ready() -> AC:
    return ~AC.any_deps_missing() & ~AC.any_deps_in_progress() & ~AC.in_progress()


def follows_changes() -> AC:
    """Like ``eager()``, but an upstream re-materialized with the same data version does not count."""
    changed = AC.any_deps_match(
        (AC.data_version_changed() & ~AC.executed_with_root_target()) | AC.will_be_requested()
    ).with_label("any_deps_changed")
    return ((AC.newly_missing() | changed).since_last_handled() & _ready()
            & AC.all_deps_blocking_checks_passed()).with_label("follows_changes")


def retrains(cron: str, timezone: str) -> AC:
    """At most once per cron tick, and only when a dependency (the dataset, the base) got a new data version."""
    changed = AC.any_deps_match(AC.data_version_changed()).since_last_handled().with_label("dataset_changed")
    return (AC.cron_tick_passed(cron, timezone).since_last_handled() & (changed | AC.newly_missing())
            & _ready()).with_label(f"retrains({cron}, {timezone})")


def base_follows_settings() -> AC:
    return ((AC.code_version_changed() | AC.newly_missing()).since_last_handled() & ~AC.in_progress()).with_label(
        "base_follows_settings")


def condition_for(spec: dg.AssetSpec, settings: AutomationSettings) -> AC | None:
    name = spec.key.to_user_string()
    if spec.group_name in DATA_GROUPS:
        return follows_changes() if settings.follow_commits else None
    if name in TRAINING_ASSETS:
        if not settings.retrain_cron:
            return None
        return base_follows_settings() if name == "base_model" else retrains(settings.retrain_cron, settings.timezone)
    return follows_changes() if settings.export_after_training else None


def with_conditions(assets: Sequence[Any], settings: AutomationSettings) -> list[Any]:
    return [
        a.map_asset_specs(lambda s: s.replace_attributes(automation_condition=condition_for(s, settings)))
        if isinstance(a, dg.AssetsDefinition) else a
        for a in assets
    ]


def build_defs(settings: AutomationSettings, repo: RepoSettings, trackers: TrackerSettings, ci: CISettings,
               paths: ProjectPaths) -> dg.Definitions:
    @dg.sensor(
        minimum_interval_seconds=settings.poll_interval_s,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Records the commit repo.rev points at as an observation of git_repository when it changes; "
                    "the automation sensors take it from there. The cursor is the last SHA seen.",
    )
    def new_commit_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        try:
            sha, metadata = observe_commit(repo, paths)
        except dg.Failure as err:
            return dg.SkipReason(f"Cannot read the repository: {err.description}")
        if sha == context.cursor:
            return dg.SkipReason(f"No new commit on {repo.rev} (still {sha[:12]}).")
        return dg.SensorResult(
            cursor=sha,
            asset_events=[dg.AssetObservation(REPOSITORY, tags={DATA_VERSION_TAG: sha}, metadata=metadata)],
        )

    @dg.sensor(
        minimum_interval_seconds=settings.tracker_poll_interval_s,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Records when the configured issue trackers and CI systems last changed as an observation of "
                    "tracker_activity; issue_threads and ci_failures follow. The cursor is the last version seen.",
    )
    def tracker_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        try:
            resources = service_resources(trackers, ci, environ=os.environ)
            if not resources:
                return dg.SkipReason("No issue tracker or CI system is set in mochi.yaml (trackers.*, ci.*).")
            version, metadata = observe_activity(resources)
        except MissingToken as err:
            return dg.SkipReason(str(err))
        except dg.Failure as err:
            return dg.SkipReason(f"Cannot read a tracker: {err.description}")
        if version == context.cursor:
            return dg.SkipReason("Nothing changed on the trackers and CI systems.")
        return dg.SensorResult(
            cursor=version,
            asset_events=[dg.AssetObservation(ACTIVITY, tags={DATA_VERSION_TAG: version}, metadata=metadata)],
        )

    data_sensor = dg.AutomationConditionSensorDefinition(
        "data_automation_sensor",
        target=dg.AssetSelection.groups(*DATA_GROUPS),
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Rebuilds the data assets (ingestion → training_dataset) after a new commit, in one run.",
    )
    model_sensor = dg.AutomationConditionSensorDefinition(
        "model_automation_sensor",
        target=dg.AssetSelection.groups(*MODEL_GROUPS),
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Retrains when the dataset changed (at most once per '{settings.retrain_cron}' "
                    f"{settings.timezone}), then evaluates, gates and exports the new model.",
    )
    jobs = [
        dg.define_asset_job("data_refresh_job", selection=dg.AssetSelection.groups(*DATA_GROUPS),
                            description="Re-read the repository and rebuild the training dataset."),
        dg.define_asset_job("retrain_job", selection=dg.AssetSelection.groups(*MODEL_GROUPS),
                            description="Fine-tune on the current dataset, evaluate, gate, merge and export."),
    ]
    return dg.Definitions(sensors=[new_commit_sensor, tracker_sensor, data_sensor, model_sensor], jobs=jobs)
