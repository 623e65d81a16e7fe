"""Materialize deployment assets on the tiny model, with their upstream values stored by hand."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml
from pydantic import BaseModel

from mochi_pipeline.deployment.assets import defs as deployment_defs
from mochi_pipeline.resources import ArtifactIOManager, MochiProject, read_asset_file, write_asset_file
from mochi_pipeline.training.artifacts import BaseModelArtifact, FineTunedAdapter, MergedModel


def store_upstream(artifacts: Path, key: str, record: BaseModel) -> None:
    """Store an upstream asset's value exactly as ArtifactIOManager does."""
    write_asset_file(artifacts / "assets" / key, record)


def materialize_deployment(tmp: Path, model_dir: Path, adapter_dir: Path, export: dict, selection: list[str],
                           method: str = "lora"):
    """Materialize deployment assets (and their checks) on the tiny model, under ``tmp``."""
    artifacts = tmp / "artifacts"
    config = tmp / "mochi.yaml"
    config.write_text(yaml.safe_dump({"repo": {"source": str(tmp)}, "artifacts_root": str(artifacts),
                                      "export": export}), encoding="utf-8")
    store_upstream(artifacts, "merged_model", MergedModel(path=str(model_dir), base_name="tiny", method="lora"))
    base = BaseModelArtifact(name="tiny", path=str(model_dir))
    store_upstream(artifacts, "fine_tuned_adapter", FineTunedAdapter(
        path=str(adapter_dir), method=method, base=base, dataset_path=str(tmp / "dataset"), global_step=1))
    project = MochiProject(config_path=str(config))
    defs = deployment_defs
    assets = [a for a in defs.assets if any(k.to_user_string() in selection for k in a.keys)]
    checks = [c for c in defs.asset_checks if any(k.asset_key.to_user_string() in selection for k in c.check_keys)]
    result = dg.materialize(
        [*assets, *checks, dg.AssetSpec("merged_model"), dg.AssetSpec("fine_tuned_adapter")],
        selection=selection,
        resources={"project": project, "io_manager": ArtifactIOManager(project=project)},
    )
    values = {key: read_asset_file(artifacts / "assets" / f"{key}.json") for key in selection}
    return result, values
