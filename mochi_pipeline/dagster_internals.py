"""What mochi needs that Dagster 1.13 has no public API for; the only module using ``dagster._core``.

- The stale status the UI shows. Dagster marks an asset STALE when its code version changed or a
  *direct* parent has a new data version; ``asset_statuses`` adds, for each asset, the non-fresh
  assets above it, which a run has to cover to bring the whole chain up to date in one go.
- ``forget_input_version``: a step that records the first observation of its own input (the
  repository, on a new instance) makes Dagster re-read that input's data version for the
  provenance it stores, instead of the one it read when the step started.
- ``config_errors``: an executor's config checked against its schema when mochi.yaml is read, without
  resolving ``env:`` values (``dg.validate_run_config`` would need them set where the code loads).
- ``free_pool_slots``: a killed run keeps the pool slots its steps held (only the daemon's run
  monitoring frees them), so the next `mochi run` would wait forever for the ``gpu`` pool.
- ``interrupted``: Ctrl-C during ``execute_in_process`` does not raise; Dagster turns the signal into a
  failed step (``DagsterExecutionInterruptedError``) and the run just fails.
``test_dagster_internals.py`` pins the behaviour relied on, so an upgrade that changes it fails there first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import dagster as dg
from dagster._config import validate_config
from dagster._core.definitions.data_version import CachingStaleStatusResolver
from dagster._core.loader import LoadingContextForTest

FRESH, STALE, MISSING = "FRESH", "STALE", "MISSING"


@dataclass
class AssetStatus:
    status: str  # Dagster's: FRESH, STALE or MISSING
    causes: list[str] = field(default_factory=list)
    upstream_changed: list[str] = field(default_factory=list)  # non-fresh ancestors of a FRESH asset

    @property
    def needs_run(self) -> bool:
        return self.status != FRESH or bool(self.upstream_changed)


def asset_statuses(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict[dg.AssetKey, AssetStatus]:
    """Every materializable asset, in topological order, with Dagster's status and what is upstream of it."""
    graph = defs.resolve_asset_graph()
    resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
    out: dict[dg.AssetKey, AssetStatus] = {}
    for key in graph.toposorted_asset_keys:
        node = graph.get(key)
        if not node.is_materializable:
            continue
        status = resolver.get_status(key).value
        causes = [f"{c.key.asset_key.to_user_string()} {c.reason}" for c in resolver.get_stale_root_causes(key)]
        if status == MISSING:
            causes = ["never materialized"]
        out[key] = AssetStatus(status, causes)
    for key, item in out.items():
        if item.status == FRESH:
            item.upstream_changed = sorted(
                a.to_user_string() for a in graph.get_ancestor_asset_keys(key) if a in out and out[a].status != FRESH
            )
    return out


def forget_input_version(context: dg.AssetExecutionContext, key: dg.AssetKey) -> None:
    """Make the step re-read ``key``'s data version when it records its materialization's provenance."""
    context.op_execution_context._step_execution_context.wipe_input_asset_version_info(key)  # noqa: SLF001


def descendants(graph, key: dg.AssetKey) -> set[dg.AssetKey]:
    """Every asset below ``key``."""
    seen: set[dg.AssetKey] = set()
    todo = [key]
    while todo:
        for child in graph.get(todo.pop()).child_keys:
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def config_errors(schema, value: object) -> list[str]:
    """What is wrong with ``value`` for a config ``schema`` (an executor's ``config_schema``); [] if nothing."""
    result = validate_config(schema.config_type, value)
    if result.success:
        return []
    keys = ", ".join(sorted(getattr(schema.config_type, "fields", {})))
    # Dagster ends an unknown key's message with the whole schema, hard to read in one line: name the keys instead.
    return [re.sub(r'\.? Expected: ".*', f" (known keys: {keys}).", e.message, flags=re.S) for e in result.errors]


def free_pool_slots(instance: dg.DagsterInstance, run_id: str) -> None:
    """Give back the concurrency-pool slots a run that died still holds."""
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def interrupted(result: dg.ExecuteInProcessResult) -> bool:
    """Whether the run failed because it was interrupted (Ctrl-C / SIGINT), not because a step failed."""
    return any(event.is_step_failure and event.step_failure_data.error is not None
               and event.step_failure_data.error.cls_name == "DagsterExecutionInterruptedError"
               for event in result.all_events)
