"""The code location loads, and its asset graph matches the reviewed snapshot.

A deliberate graph change: the failing test writes the graph it found into its tmp_path and prints the command
that copies it over the snapshot, so the new one is reviewed (git diff) before the suite passes again. The test
never writes into the source tree.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
import pytest

from mochi_pipeline.config import parse_config
from mochi_pipeline.definitions import build_defs, defs

SNAPSHOT = Path(__file__).with_name("asset_graph_snapshot.json")
LAYERS = ("ingestion", "preprocessing", "data_generation", "training", "deployment")
PACKAGE = Path(__file__).resolve().parent.parent / "mochi_pipeline"


@pytest.fixture
def graph(sample_repo, tmp_path):
    return build_defs(parse_config({"repo": {"source": str(sample_repo)}}, tmp_path)).resolve_asset_graph()


def _graph_summary(graph) -> dict:
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        condition = node.automation_condition
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "kinds": sorted(k.removeprefix("dagster/kind/") for k in node.tags if k.startswith("dagster/kind/")),
            "has_code_version": node.code_version is not None,
            "checks": sorted(c.name + (" (blocking)" if graph.get_check_spec(c).blocking else "")
                             for c in node.check_keys),
            "automation": condition.get_label() if condition is not None else None,
            **({"partitions": node.partitions_def.name,
                "backfill_policy": str(node.backfill_policy.policy_type.value)} if node.partitions_def else {}),
        }
    return assets


def test_code_location_loads_from_mochi_yaml_when_asked(sample_repo, monkeypatch):
    monkeypatch.chdir(sample_repo)
    monkeypatch.delenv("MOCHI_CONFIG", raising=False)
    loaded = defs()  # what workspace.yaml loads: reads the config now, not at import
    dg.Definitions.validate_loadable(loaded)
    assert loaded.resolve_implicit_global_asset_job_def() is not None


def test_asset_graph_matches_snapshot(graph, tmp_path):
    summary = _graph_summary(graph)
    if summary != json.loads(SNAPSHOT.read_text()):
        found = tmp_path / SNAPSHOT.name
        found.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        pytest.fail(f"The asset graph differs from {SNAPSHOT.name}. If the change is meant, accept it with\n"
                    f"  cp {found} {SNAPSHOT}\nand review `git diff`.")


def test_every_asset_is_grouped_by_layer_described_and_versioned(graph):
    for key in graph.materializable_asset_keys:
        node = graph.get(key)
        assert node.group_name in LAYERS, key
        assert node.description, f"{key.to_user_string()} has no description"
        assert node.code_version, f"{key.to_user_string()} has no code_version"
        assert any(t.startswith("dagster/kind/") for t in node.tags), f"{key.to_user_string()} has no kinds"


def test_quality_gate_blocks_what_follows(graph):
    evaluation = graph.get(dg.AssetKey("evaluation_report"))
    (gate,) = [graph.get_check_spec(k) for k in evaluation.check_keys if k.name == "quality_gate"]
    assert gate.blocking
    for name in ("merged_model", "gguf_lora_adapter"):
        assert dg.AssetKey("evaluation_report") in graph.get(dg.AssetKey(name)).parent_keys


def test_layers_only_import_earlier_layers_and_never_the_whole_config():
    for i, layer in enumerate(LAYERS):
        later = LAYERS[i + 1:]
        for path in (PACKAGE / layer).glob("*.py"):
            text = path.read_text()
            for other in later:
                assert f"mochi_pipeline.{other}" not in text, f"{path} imports the later layer {other}"
            assert not re.search(r"mochi_pipeline\.(config|cli|definitions|automation)\b", text), (
                f"{path} reaches back up to the whole config or the code location")
            if path.name == "assets.py":
                assert not re.search(r"mochi_pipeline\.\w+\.assets\b", text), f"{path} imports another layer's assets"


def test_the_tests_data_asset_list_is_every_data_layer_asset(graph):
    from mochi_pipeline.automation import DATA_GROUPS
    from mochi_pipeline_tests.materialize import DATA_ASSETS

    in_graph = {k.to_user_string() for k in graph.materializable_asset_keys if graph.get(k).group_name in DATA_GROUPS}
    assert set(DATA_ASSETS) == in_graph


def test_assets_that_talk_to_a_network_retry_and_local_ones_do_not(sample_repo, tmp_path):
    remote = build_defs(parse_config({"repo": {"source": "https://example.invalid/x.git"},
                                      "generation": {"qa": {"base_url": "http://127.0.0.1:9/v1"}},
                                      "training": {"base_model": "Qwen/Qwen2.5-Coder-0.5B"}}, tmp_path))
    local = build_defs(parse_config({"repo": {"source": str(sample_repo)}}, tmp_path))

    def retried(defs) -> set[str]:
        return {k.to_user_string() for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.op.retry_policy
                for k in a.keys}

    assert retried(remote) == {"source_files", "commit_history", "qa_pairs", "base_model"}
    assert retried(local) == set()


def test_the_instance_config_loads_with_run_retries_one_run_and_one_gpu_step_at_a_time(tmp_path):
    import shutil

    shutil.copyfile(PACKAGE.parent / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:  # Dagster validates the file here
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        assert not instance.run_retries_retry_on_asset_or_op_failure
        concurrency = instance.get_concurrency_config()
        assert concurrency.run_queue_config.max_concurrent_runs == 1
        assert concurrency.pool_config.default_pool_limit == 1  # the limit of the `gpu` pool, mochi's only one
        assert instance.event_log_storage.supports_global_concurrency_limits  # SQLite enforces pools too
