"""What mochi needs that Dagster 1.13 has no public API for; the only module using ``dagster._core``.

- The stale status the UI shows. Dagster marks an asset STALE when its code version changed or a
  *direct* parent has a new data version; ``asset_statuses`` adds, for each asset, the non-fresh
  assets above it, which a run has to cover to bring the whole chain up to date in one go.
- Partitions. ``asset_statuses`` gives a partitioned asset the status of its partitions (STALE if
  one is), naming them. ``partitions_data_version`` is the input data version Dagster records for an
  unpartitioned asset reading every partition of another (a hash of their versions);
  ``partition_range_tags`` make one run cover several partitions (next to unpartitioned assets).
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

import hashlib
import re
from dataclasses import dataclass, field

import dagster as dg
from dagster._config import validate_config
from dagster._core.definitions.data_version import (
    SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD,
    CachingStaleStatusResolver,
)
from dagster._core.events import DagsterEventType
from dagster._core.loader import LoadingContextForTest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

FRESH, STALE, MISSING = "FRESH", "STALE", "MISSING"
DATA_VERSION_TAG = "dagster/data_version"


@dataclass
class AssetStatus:
    status: str  # Dagster's: FRESH, STALE or MISSING
    causes: list[str] = field(default_factory=list)
    upstream_changed: list[str] = field(default_factory=list)  # non-fresh ancestors of a FRESH asset
    partitions: dict[str, str] = field(default_factory=dict)  # a partitioned asset's: partition -> status

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
        if node.partitions_def is not None:
            out[key] = _partitioned_status(resolver, key, node.partitions_def.get_partition_keys(
                dynamic_partitions_store=instance))
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


def _partitioned_status(resolver, key: dg.AssetKey, partitions: list[str]) -> AssetStatus:
    """MISSING if a partition is, else STALE if one is, else FRESH; causes name the partitions."""
    by_partition = {p: resolver.get_status(key, p).value for p in partitions}
    causes = []
    for status, what in ((MISSING, "never materialized"), (STALE, "stale")):
        if named := [p for p, st in by_partition.items() if st == status]:
            causes.append(f"{len(named)} of {len(partitions)} partitions {what}: {', '.join(named[:5])}"
                          + (", ..." if len(named) > 5 else ""))
    for p, st in by_partition.items():
        if st == STALE:
            causes.extend(f"{p}: {c.key.asset_key.to_user_string()} {c.reason}"
                          for c in resolver.get_stale_root_causes(key, p)[:1])
            break
    status = MISSING if MISSING in by_partition.values() else STALE if STALE in by_partition.values() else FRESH
    return AssetStatus(status, causes, partitions=by_partition)


def partitions_data_version(instance: dg.DagsterInstance, key: dg.AssetKey, partitions: list[str]) -> str | None:
    """The data version Dagster records for an input that is every partition of ``key`` (as its
    ``_get_partitions_data_version_from_keys`` computes it; the latest one when there are too many)."""
    if len(partitions) >= SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD:
        records = instance.fetch_materializations(key, limit=1).records
        return records[0].event_log_entry.asset_materialization.tags.get(DATA_VERSION_TAG) if records else None
    tags = instance.event_log_storage.get_latest_tags_by_partition(
        key, DagsterEventType.ASSET_MATERIALIZATION, [DATA_VERSION_TAG], asset_partitions=list(partitions))
    versions = [tag[DATA_VERSION_TAG] for _, tag in sorted(tags.items())]
    return hashlib.sha256("".join(versions).encode()).hexdigest()


def partition_range_tags(partitions: list[str]) -> dict[str, str]:
    """Run tags that make one run cover ``partitions`` (first to last, in the partitions' own order)."""
    return {ASSET_PARTITION_RANGE_START_TAG: partitions[0], ASSET_PARTITION_RANGE_END_TAG: partitions[-1]}


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
