"""``mochi report``: what the last runs produced, read back from Dagster's event log."""

from __future__ import annotations

import dagster as dg

from mochi_pipeline.config import MochiConfig

# Metadata too long for a terminal line (tables, images) is shown only for these assets.
FULL_TEXT_ASSETS = {"evaluation_report"}


def _short(value: dg.MetadataValue) -> str | None:
    raw = value.value
    if isinstance(raw, bool | int | float):
        return f"{raw:,.4g}" if isinstance(raw, float) else f"{raw:,}"
    if isinstance(raw, str) and "\n" not in raw and len(raw) <= 100 and "data:image" not in raw:
        return raw
    return None


def print_report(cfg: MochiConfig, instance: dg.DagsterInstance, defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    print(f"mochi report for {cfg.repo_source} (artifacts: {cfg.artifacts_path})\n")
    for key in graph.toposorted_asset_keys:
        if not graph.get(key).is_materializable:
            continue
        event = instance.get_latest_materialization_event(key)
        name = key.to_user_string()
        if event is None or event.asset_materialization is None:
            print(f"{name}: not materialized yet")
            continue
        metadata = event.asset_materialization.metadata
        facts = [f"{k}={s}" for k, v in metadata.items()
                 if (s := _short(v)) is not None and not k.startswith(("dagster/", "mochi/"))]
        print(f"{name}: " + ("; ".join(facts) if facts else "materialized"))
        if name in FULL_TEXT_ASSETS:
            for v in metadata.values():
                if isinstance(v.value, str) and "\n" in v.value and "data:image" not in v.value:
                    print(f"\n{v.value.strip()}\n")
