"""Incremental rebuilds: code versions that carry upstream settings, and reuse of unchanged results.

Code versions. Each layer's factory gives an asset its *own* version,
``<logic version>-<signature of the settings it reads>``. ``chain_code_versions`` appends a hash
of its parents' versions, so a ``mochi.yaml`` edit makes the asset that reads the setting and
everything below it STALE in Dagster's own status (the UI included).

Reuse. A run that follows a change covers the whole chain below it. An asset whose own version
and whose inputs' data versions equal those of its last materialization returns ``Unchanged``:
the stored value stays, the materialization repeats the previous data version, metadata and
check results, and everything below it can be reused in turn. A run tagged ``mochi/force=true``
(``mochi run --all``) recomputes everything.

A partitioned asset (``code_chunks``) is reused per partition: ``chunked_before`` compares a hash of
the partition's own slice of the input with the one its last materialization recorded, so a commit
re-chunks only the partitions whose files it changed. Dagster keeps one data version per run of a
partitioned asset; an unpartitioned asset reading one records the hash of its partitions' versions
(``partitions_data_version``), which ``reuse`` compares in the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from mochi_pipeline.dagster_internals import partitions_data_version
from mochi_pipeline.io_manager import Unchanged, asset_base, partition_base, read_asset_file, stored_file
from mochi_pipeline.storage import content_hash

FORCE_TAG = "mochi/force"
REUSED_KEY = "reused_from_run"
INPUT_HASH_KEY = "input_hash"  # of a partition's slice of its input, in the partition's metadata
CODE_VERSION_TAG = "dagster/code_version"
CHECKS_KEY = "mochi/checks"
# The tag under which Dagster stores a materialization's or observation's data version.
DATA_VERSION_TAG = "dagster/data_version"


def own_version(code_version: str | None) -> str:
    """The asset's own part of a chained code version (its logic and its settings)."""
    return (code_version or "").split("+", 1)[0]


def chain_code_versions(assets: Sequence[Any]) -> list[Any]:
    """``assets`` with each code version extended by a hash of its parents' (chained) versions."""
    specs = {spec.key: spec for a in assets if isinstance(a, dg.AssetsDefinition) for spec in a.specs}
    chained: dict[dg.AssetKey, str] = {}

    def version(key: dg.AssetKey) -> str:
        if key not in chained:
            spec = specs[key]
            parents = sorted((d.asset_key for d in spec.deps if d.asset_key in specs), key=lambda k: k.path)
            own = spec.code_version or ""
            chained[key] = f"{own}+{content_hash(*map(version, parents))[:8]}" if parents else own
        return chained[key]

    for key in specs:
        version(key)
    return [
        a.map_asset_specs(lambda s: s.replace_attributes(code_version=chained[s.key]))
        if isinstance(a, dg.AssetsDefinition) else a
        for a in assets
    ]


def data_version_now(instance: dg.DagsterInstance, key: dg.AssetKey) -> str | None:
    """The data version Dagster currently holds for ``key``: its latest materialization, else observation."""
    for fetch in (instance.fetch_materializations, instance.fetch_observations):
        records = fetch(key, limit=1).records
        if records:
            entry = records[0].event_log_entry
            event = entry.asset_materialization or entry.asset_observation
            return event.tags.get(DATA_VERSION_TAG) if event is not None else None
    return None


def _input_version_now(context: dg.AssetExecutionContext, dep: dg.AssetKey) -> str | None:
    """The data version Dagster would record for input ``dep`` now (of all its partitions, if partitioned)."""
    partitions_def = context.job_def.asset_layer.asset_graph.get(dep).partitions_def
    if partitions_def is None:
        return data_version_now(context.instance, dep)
    keys = partitions_def.get_partition_keys(dynamic_partitions_store=context.instance)
    return partitions_data_version(context.instance, dep, keys)


def chunked_before(context: dg.AssetExecutionContext, partition: str, input_hash: str, root: str | Path) -> str | None:
    """The run whose result for ``partition`` still holds (same own version, same input slice), or None."""
    if context.run.tags.get(FORCE_TAG) == "true":
        return None
    key = context.asset_key
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
    if not records or stored_file(partition_base(root, key, partition)) is None:
        return None
    last = records[0].event_log_entry
    event = last.asset_materialization
    if own_version(event.tags.get(CODE_VERSION_TAG)) != own_version(context.assets_def.code_versions_by_key[key]):
        return None
    seen = event.metadata.get(INPUT_HASH_KEY)
    if seen is None or seen.value != input_hash:
        return None
    origin = event.metadata.get(REUSED_KEY)
    return origin.value if origin is not None else last.run_id


def checked(output: dg.Output, checks: Sequence[dg.AssetCheckResult]) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """The output, then its check results; the results also travel in its metadata so a reuse repeats them."""
    summary = [
        {"check_name": c.check_name, "passed": c.passed, "severity": c.severity.value,
         "description": c.description, "metadata": {k: _plain(v) for k, v in c.metadata.items()}}
        for c in checks
    ]
    yield output.with_metadata({**output.metadata, CHECKS_KEY: dg.MetadataValue.json(summary)})
    yield from checks


def _plain(value: dg.MetadataValue) -> Any:
    raw = value.value
    try:
        json.dumps(raw)
    except TypeError:
        return str(raw)
    return raw


@dataclass(frozen=True)
class Earlier:
    """This asset's last materialization, made with the same own settings and logic as now."""

    entry: dg.EventLogEntry
    provenance: dg.DataProvenance
    stored: Path  # the value the IO manager stored for it

    @property
    def materialization(self) -> dg.AssetMaterialization:
        return self.entry.asset_materialization

    def value(self) -> Any:
        return read_asset_file(self.stored)


def earlier(context: dg.AssetExecutionContext, root: str | Path) -> Earlier | None:
    """The last materialization to build on, unless the run is forced or the asset's own version changed."""
    if context.run.tags.get(FORCE_TAG) == "true":
        return None
    key = context.asset_key
    provenance = context.get_asset_provenance(key)
    entry = context.instance.get_latest_materialization_event(key)
    stored = stored_file(asset_base(root, key))
    if provenance is None or entry is None or entry.asset_materialization is None or stored is None:
        return None
    if own_version(provenance.code_version) != own_version(context.assets_def.code_versions_by_key[key]):
        return None
    return Earlier(entry, provenance, stored)


def reuse(
    context: dg.AssetExecutionContext,
    root: str | Path,
    inputs: Mapping[dg.AssetKey, str] | None = None,
    still_valid: Callable[[Any], bool] | None = None,
) -> list[dg.Output | dg.AssetCheckResult] | None:
    """The events that repeat the last materialization, when nothing it was made from changed; else None.

    ``inputs`` overrides the current data version of an input (the commit this run pinned);
    ``still_valid`` gets the stored value and says whether what it points at is still there.
    """
    last = earlier(context, root)
    if last is None:
        return None
    key = context.asset_key
    deps = {d.asset_key for d in context.assets_def.specs_by_key[key].deps}
    if set(last.provenance.input_data_versions) != deps:
        return None
    for dep in deps:
        now = (inputs or {}).get(dep) or _input_version_now(context, dep)
        if now is None or last.provenance.input_data_versions[dep].value != now:
            return None
    if still_valid is not None and not still_valid(last.value()):
        return None
    metadata = dict(last.materialization.metadata)
    summary = metadata.pop(CHECKS_KEY, None)
    origin = metadata.pop(REUSED_KEY, None)
    origin_run = origin.value if origin is not None else last.entry.run_id
    context.log.info(f"{key.to_user_string()}: inputs and settings unchanged since run {origin_run}; reusing it.")
    version = dg.DataVersion(last.materialization.tags[DATA_VERSION_TAG])
    output = dg.Output(Unchanged(run_id=origin_run), data_version=version,
                       output_name=context.assets_def.get_output_name_for_asset_key(key),
                       metadata={**metadata, REUSED_KEY: origin_run})
    current = {spec.name for spec in context.assets_def.check_specs if spec.asset_key == key}
    checks = [
        dg.AssetCheckResult(asset_key=key, check_name=c["check_name"], passed=c["passed"], description=c["description"],
                            severity=dg.AssetCheckSeverity(c["severity"]), metadata=c["metadata"])
        for c in (summary.value if summary is not None else [])
        if c["check_name"] in current  # a check since removed is not repeated
    ]
    return list(checked(output, checks)) if checks else [output]
