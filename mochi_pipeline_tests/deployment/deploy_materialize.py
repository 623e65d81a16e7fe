"""Materialize deployment assets on the tiny model, with their upstream values stored by hand."""

from __future__ import annotations

from pathlib import Path

from mochi_pipeline.io_manager import read_asset_file, write_asset_file
from mochi_pipeline.records import Record
from mochi_pipeline.training.artifacts import BaseModelArtifact, EvaluationReport, FineTunedAdapter, MergedModel
from mochi_pipeline_tests.materialize import materialize, project_config


def store_upstream(artifacts: Path, key: str, record: Record) -> None:
    """Store an upstream asset's value exactly as ArtifactIOManager does."""
    write_asset_file(artifacts / "assets" / key, record)


def materialize_deployment(tmp: Path, model_dir: Path, adapter_dir: Path, export: dict, selection: list[str],
                           method: str = "lora", accepted: bool = True, raise_on_error: bool = True):
    """Materialize deployment assets (and their checks) on the tiny model, under ``tmp``."""
    cfg = project_config(tmp, repo={"source": str(tmp)}, export=export, training={"method": method})
    artifacts = cfg.artifacts_path
    store_upstream(artifacts, "merged_model", MergedModel(path=str(model_dir), base_name="tiny", method="lora"))
    base = BaseModelArtifact(name="tiny", path=str(model_dir))
    store_upstream(artifacts, "fine_tuned_adapter", FineTunedAdapter(
        path=str(adapter_dir), method=method, base=base, dataset_path=str(tmp / "dataset"), global_step=1))
    store_upstream(artifacts, "evaluation_report", EvaluationReport(
        path=str(tmp), markdown="", metrics={}, fine_tuned_better=accepted, accepted=accepted,
        gate_reason="stored by the test"))
    result = materialize(cfg, selection, raise_on_error=raise_on_error)
    values = {key: read_asset_file(artifacts / "assets" / f"{key}.json") for key in selection
              if (artifacts / "assets" / f"{key}.json").exists()}
    return result, values
