"""What runs by itself once its sensors are on (Dagster UI → Automation; all start stopped).

- ``new_commit_sensor`` looks at repo.rev every ``automation.poll_interval_s`` and records a new
  commit as an observation of ``git_repository`` (no run of its own), and makes the partitions of
  ``code_chunks`` the directories holding code at that commit.
- ``tracker_sensor`` looks at the configured issue trackers and CI systems every
  ``automation.tracker_poll_interval_s`` and records their activity as an observation of
  ``tracker_activity`` when it changed.
- ``data_automation_sensor`` evaluates the data assets' conditions: an asset runs when what it reads
  got a new data version, and the whole chain below a new commit goes in one request (a backfill:
  code_chunks' partitions run ``chunking.partitions_per_run`` to a run, after the assets above them).
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
    read_at,
    service_resources,
)
from mochi_pipeline.ingestion.settings import CISettings, RepoSettings, SourceSettings, TrackerSettings
from mochi_pipeline.paths import ProjectPaths
from mochi_pipeline.preprocessing.assets import partition_requests
from mochi_pipeline.preprocessing.code_partitions import partitions_at
from mochi_pipeline.preprocessing.settings import ChunkingSettings

AC = dg.AutomationCondition
DATA_GROUPS = ("ingestion", "preprocessing", "data_generation")
MODEL_GROUPS = ("training", "deployment")
TRAINING_ASSETS = ("base_model", "fine_tuned_adapter")


def _ready() -> AC:
    return ~AC.any_deps_missing() & ~AC.any_deps_in_progress() & ~AC.in_progress()


def _deps_changed() -> AC:
    """Something it reads got a new data version (or will, in this tick's run)."""
    return AC.any_deps_match(
        (AC.data_version_changed() & ~AC.executed_with_root_target()) | AC.will_be_requested()
    ).with_label("any_deps_changed")


def _has_changes() -> AC:
    """Missing, or something it reads got a new data version, since it was last handled."""
    return (AC.newly_missing() | _deps_changed()).since_last_handled()


def follows_changes() -> AC:
    """Like ``eager()``, but an upstream re-materialized with the same data version does not count."""
    return (_has_changes() & _ready() & AC.all_deps_blocking_checks_passed()).with_label("follows_changes")


def _upstream_changing(depth: int) -> AC:
    """Something up to ``depth`` levels above got a new data version in this tick, runs, or will run in it.
    (Stateless: ``since`` conditions keep no state below ``any_deps_match``.)"""
    now = AC.data_version_changed() | AC.in_progress() | AC.will_be_requested()
    upstream = AC.any_deps_match(now)
    for _ in range(depth - 1):
        upstream = AC.any_deps_match(now | upstream)
    return upstream


def follows_changes_partitioned(depth: int) -> AC:
    """``follows_changes`` for a partitioned asset (code_chunks, ``depth`` levels of assets above it), which
    Dagster never runs in the same run as its unpartitioned parents: a new partition (a new directory) does not
    run while the commit that made it is still on its way down; the new files reach it in the next request."""
    new_partition = (AC.newly_missing() & ~_upstream_changing(depth)).with_label("new_partition")
    return ((new_partition | _deps_changed()).since_last_handled() & _ready()
            & AC.all_deps_blocking_checks_passed()).with_label("follows_changes_partitioned")


def follows_changes_after(partitioned: dg.AssetKey, depth: int) -> AC:
    """``follows_changes`` for an asset below a partitioned one (``depth`` levels of assets above that one):
    wait while the partitioned asset runs or has changes on their way to it, so a commit builds what is below it
    once, after it (without the wait it would also run first, beside the assets above the partitioned one)."""
    coming = AC.asset_matches(partitioned, AC.in_progress() | _upstream_changing(depth)).with_label(
        f"{partitioned.to_user_string()}_changing")
    return (_has_changes() & _ready() & AC.all_deps_blocking_checks_passed() & ~coming).with_label(
        f"follows_changes_after({partitioned.to_user_string()})")


def retrains(cron: str, timezone: str) -> AC:
    """At most once per cron tick, only when a dependency (the dataset, the base) got a new data version, and never
    on a dataset whose blocking check (the leak scan) failed; a rebuild that passes unblocks it."""
    changed = AC.any_deps_match(AC.data_version_changed()).since_last_handled().with_label("dataset_changed")
    return (AC.cron_tick_passed(cron, timezone).since_last_handled() & (changed | AC.newly_missing())
            & _ready() & AC.all_deps_blocking_checks_passed()).with_label(f"retrains({cron}, {timezone})")


def base_follows_settings() -> AC:
    return ((AC.code_version_changed() | AC.newly_missing()).since_last_handled() & ~AC.in_progress()).with_label(
        "base_follows_settings")


def condition_for(spec: dg.AssetSpec, settings: AutomationSettings, after: dg.AssetKey | None = None,
                  depths: dict[dg.AssetKey, int] | None = None) -> AC | None:
    """``after``: the partitioned asset ``spec`` is below (code_chunks), if any; ``depths``: each partitioned
    asset's levels of assets above it."""
    depths = depths or {}
    name = spec.key.to_user_string()
    if spec.group_name in DATA_GROUPS:
        if not settings.follow_commits:
            return None
        if spec.key in depths:
            return follows_changes_partitioned(depths[spec.key])
        return follows_changes_after(after, depths[after]) if after is not None else follows_changes()
    if name in TRAINING_ASSETS:
        if not settings.retrain_cron:
            return None
        return base_follows_settings() if name == "base_model" else retrains(settings.retrain_cron, settings.timezone)
    return follows_changes() if settings.export_after_training else None


def _levels_above(specs: dict[dg.AssetKey, dg.AssetSpec], key: dg.AssetKey) -> int:
    """How many levels of assets are above ``key`` (an observed source such as git_repository counts)."""
    if key not in specs:
        return 0
    return max((1 + _levels_above(specs, d.asset_key) for d in specs[key].deps), default=0)


def _partitioned_depths(assets: Sequence[Any]) -> dict[dg.AssetKey, int]:
    """Each partitioned asset -> how many levels of assets are above it."""
    specs = {spec.key: spec for a in assets if isinstance(a, dg.AssetsDefinition) for spec in a.specs}
    return {key: _levels_above(specs, key) for a in assets if isinstance(a, dg.AssetsDefinition)
            and a.partitions_def is not None for key in a.keys}


def _below_partitioned(assets: Sequence[Any]) -> dict[dg.AssetKey, dg.AssetKey]:
    """Each data asset below a partitioned data asset -> that asset."""
    defs = [a for a in assets if isinstance(a, dg.AssetsDefinition)]
    specs = {spec.key: spec for a in defs for spec in a.specs}
    children: dict[dg.AssetKey, list[dg.AssetKey]] = {}
    for spec in specs.values():
        for dep in spec.deps:
            children.setdefault(dep.asset_key, []).append(spec.key)
    below: dict[dg.AssetKey, dg.AssetKey] = {}
    for a in defs:
        if a.partitions_def is None:
            continue
        todo = [key for key in a.keys]
        while todo:
            for child in children.get(todo.pop(), []):
                if child not in below and specs[child].group_name in DATA_GROUPS:
                    below[child] = next(iter(a.keys))
                    todo.append(child)
    return below


def with_conditions(assets: Sequence[Any], settings: AutomationSettings) -> list[Any]:
    below, depths = _below_partitioned(assets), _partitioned_depths(assets)
    return [
        a.map_asset_specs(lambda s: s.replace_attributes(
            automation_condition=condition_for(s, settings, below.get(s.key), depths)))
        if isinstance(a, dg.AssetsDefinition) else a
        for a in assets
    ]


def code_partitions_at(repo: RepoSettings, sources: SourceSettings, chunking: ChunkingSettings, paths: ProjectPaths,
                       sha: str) -> list[str]:
    """code_chunks' partitions at commit ``sha`` of the configured repository."""
    return partitions_at(read_at(repo, paths, sha), sha, sources, chunking)


def build_defs(settings: AutomationSettings, repo: RepoSettings, sources: SourceSettings, chunking: ChunkingSettings,
               trackers: TrackerSettings, ci: CISettings, paths: ProjectPaths) -> dg.Definitions:
    @dg.sensor(
        minimum_interval_seconds=settings.poll_interval_s,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Records the commit repo.rev points at as an observation of git_repository when it changes, "
                    "and makes code_chunks' partitions the directories holding code there; the automation sensors "
                    "take it from there. The cursor is the last SHA seen.",
    )
    def new_commit_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        try:
            sha, metadata = observe_commit(repo, paths)
            if sha == context.cursor:
                return dg.SkipReason(f"No new commit on {repo.rev} (still {sha[:12]}).")
            partitions = code_partitions_at(repo, sources, chunking, paths, sha)
        except dg.Failure as err:
            return dg.SkipReason(f"Cannot read the repository: {err.description}")
        return dg.SensorResult(
            cursor=sha,
            asset_events=[dg.AssetObservation(REPOSITORY, tags={DATA_VERSION_TAG: sha}, metadata=metadata)],
            dynamic_partitions_requests=partition_requests(context.instance, partitions),
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
        emit_backfills=True,  # code_chunks' partitions then run chunking.partitions_per_run to a run, in order
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
