"""The code location loads, and its asset graph matches the reviewed snapshot.

A deliberate graph change updates the snapshot: MOCHI_UPDATE_SNAPSHOT=1 pytest mochi_pipeline_tests/test_definitions.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

from mochi_pipeline.definitions import defs

SNAPSHOT = Path(__file__).with_name("asset_graph_snapshot.json")
LAYERS = ("ingestion", "preprocessing", "data_generation", "training", "deployment")


def _graph_summary() -> dict:
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "kinds": sorted(k.removeprefix("dagster/kind/") for k in node.tags if k.startswith("dagster/kind/")),
            "has_code_version": node.code_version is not None,
            "checks": sorted(c.name for c in node.check_keys),
        }
    return assets


def test_definitions_load_and_validate():
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_implicit_global_asset_job_def() is not None


def test_asset_graph_matches_snapshot():
    summary = _graph_summary()
    if os.environ.get("MOCHI_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    assert summary == json.loads(SNAPSHOT.read_text())


def test_every_asset_is_grouped_by_layer_described_and_versioned():
    graph = defs.resolve_asset_graph()
    for key in graph.materializable_asset_keys:
        node = graph.get(key)
        assert node.group_name in LAYERS, key
        assert node.description, f"{key.to_user_string()} has no description"
        assert node.code_version, f"{key.to_user_string()} has no code_version"
        assert any(t.startswith("dagster/kind/") for t in node.tags), f"{key.to_user_string()} has no kinds"


def test_layers_only_import_earlier_layers():
    root = Path(__file__).resolve().parent.parent / "mochi_pipeline"
    for i, layer in enumerate(LAYERS):
        later = LAYERS[i + 1:]
        for path in (root / layer).glob("*.py"):
            text = path.read_text()
            for other in later:
                assert f"mochi_pipeline.{other}" not in text, f"{path} imports the later layer {other}"
