"""Blocking checks that hold across runs.

Dagster skips what lies below a failed blocking check only in the run that ran the check. The asset it
checked is stored all the same and stays fresh, so the next `mochi run`, the nightly tick or a launch
from the UI would read it. Here a blocking check that failed (with ERROR severity) on the asset's
latest materialization keeps everything below that asset from running until the asset is rebuilt
and the check passes: `mochi run` plans around it (``held_back``), `mochi status` names it, and each
asset that reads such an asset refuses to start (``refuse_when_blocked``), whoever launched it. The
automation conditions use Dagster's own ``all_deps_blocking_checks_passed``, which reads the same records.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg

from mochi_pipeline.dagster_internals import descendants

HISTORY = 20  # check records looked through for the latest finished one (later ones may be planned, unfinished)


@dataclass(frozen=True)
class FailedCheck:
    asset: dg.AssetKey
    check: str
    reason: str
    run_id: str

    def describe(self) -> str:
        name = self.asset.to_user_string()
        return (f"check {self.check} on {name} failed (run {self.run_id[:8]}): {self.reason.rstrip('.')}. "
                f"Everything below {name} waits until {name} is rebuilt (a new commit or a settings change) and "
                "the check passes.")


def failed_blocking_checks(graph, instance: dg.DagsterInstance,
                           assets: Iterable[dg.AssetKey] | None = None) -> list[FailedCheck]:
    """The blocking checks (of ``assets``, default all) whose last result, on the latest materialization of
    their asset, is a failure with ERROR severity."""
    wanted = set(assets) if assets is not None else None
    keys = sorted((k for k in graph.asset_check_keys if graph.get_check_spec(k).blocking
                   and (wanted is None or k.asset_key in wanted)), key=lambda k: (k.asset_key.to_user_string(), k.name))
    return [f for k in keys if (f := _failed(instance, k)) is not None]


def _failed(instance: dg.DagsterInstance, key: dg.AssetCheckKey) -> FailedCheck | None:
    record = next((r for r in instance.event_log_storage.get_asset_check_execution_history(key, limit=HISTORY)
                   if r.status.value != "PLANNED"), None)
    if record is None or record.status.value != "FAILED" or record.event is None:
        return None
    evaluation = record.event.dagster_event.event_specific_data
    if evaluation.severity != dg.AssetCheckSeverity.ERROR:
        return None
    target = evaluation.target_materialization_data
    latest = instance.fetch_materializations(key.asset_key, limit=1).records
    if target is not None and latest and latest[0].storage_id != target.storage_id:
        return None  # rebuilt since, without this check: what it said is about an older value
    return FailedCheck(key.asset_key, key.name, evaluation.description or "", record.run_id)


def _blocking_checks_of(instance: dg.DagsterInstance, asset: dg.AssetKey) -> list[dg.AssetCheckKey]:
    """The blocking checks evaluated in the run that made ``asset``'s latest materialization (a run's own graph
    holds no check of an asset it does not run, so the event log says which there are)."""
    latest = instance.fetch_materializations(asset, limit=1).records
    if not latest:
        return []
    events = instance.all_logs(latest[0].run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    return sorted({dg.AssetCheckKey(asset, e.dagster_event.event_specific_data.check_name) for e in events
                   if e.dagster_event.event_specific_data.asset_key == asset
                   and e.dagster_event.event_specific_data.blocking}, key=lambda k: k.name)


def held_back(graph, instance: dg.DagsterInstance, keys: list[dg.AssetKey]) -> tuple[list[dg.AssetKey], list[str]]:
    """``keys`` without what lies below a failed blocking check whose asset is not among them (rebuilt in the
    same run, its check runs again and Dagster blocks on it there), and a note per check that held something."""
    notes = []
    for failed in failed_blocking_checks(graph, instance):
        if failed.asset in keys:
            continue
        below = descendants(graph, failed.asset)
        if stopped := [k for k in keys if k in below]:
            keys = [k for k in keys if k not in below]
            notes.append(f"Not running {', '.join(k.to_user_string() for k in stopped)}: {failed.describe()}")
    return keys, notes


def blocked_assets(graph, instance: dg.DagsterInstance) -> dict[dg.AssetKey, FailedCheck]:
    """Each asset below a failed blocking check -> that check (`mochi status`)."""
    out: dict[dg.AssetKey, FailedCheck] = {}
    for failed in failed_blocking_checks(graph, instance):
        for key in descendants(graph, failed.asset):
            out.setdefault(key, failed)
    return out


def refuse_when_blocked(context: dg.AssetExecutionContext) -> None:
    """Stop this asset when one it reads failed a blocking check (a launch from the UI, a sensor, --select)."""
    parents = context.job_def.asset_layer.asset_graph.get(context.asset_key).parent_keys
    failed = [f for parent in sorted(parents) for key in _blocking_checks_of(context.instance, parent)
              if (f := _failed(context.instance, key)) is not None]
    if failed:
        raise dg.Failure(description=f"{context.asset_key.to_user_string()} is blocked: "
                         + " ".join(f.describe() for f in failed))
