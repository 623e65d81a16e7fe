"""Resources shared by every layer: the project config and the artifact IO manager."""

# No `from __future__ import annotations` here: Dagster reads `ResourceDependency[...]` field
# annotations at class creation, and string annotations make ArtifactIOManager(project=...) fail.

import importlib
import json
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import BaseModel, Field, PrivateAttr

from mochi_pipeline.config import MochiConfig, load_config
from mochi_pipeline.storage import atomic_write_text

CONFIG_SIGNATURE_KEY = "mochi/config_signature"


class MochiProject(dg.ConfigurableResource):
    """The target project: its ``mochi.yaml`` and everything derived from it.

    ``config_path`` empty means: ``$MOCHI_CONFIG``, else ``mochi.yaml`` in the directory Dagster
    was started from (or its git top level), else defaults for that repository. It is resolved
    when a run starts, never at import.
    """

    config_path: str = Field("", description="Path to mochi.yaml; '' = discover from the working directory.")
    _config: MochiConfig | None = PrivateAttr(default=None)

    @property
    def config(self) -> MochiConfig:
        if self._config is None:
            self._config = load_config(self.config_path or None)
        return self._config

    @property
    def artifacts(self) -> Path:
        return self.config.artifacts_path

    def path(self, *parts: str) -> Path:
        """A path under the artifacts root (parent directories created)."""
        p = self.artifacts.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


class ArtifactIOManager(dg.ConfigurableIOManager):
    """Stores asset values as readable files under ``<artifacts>/assets/``.

    A pydantic record becomes ``<key>.json``; a list of records becomes ``<key>.jsonl`` whose first
    line names the record class. Both are written atomically.
    """

    project: dg.ResourceDependency[MochiProject]

    def _base(self, context: dg.OutputContext | dg.InputContext) -> Path:
        key = context.asset_key if context.has_asset_key else dg.AssetKey(context.get_identifier())
        path = self.project.artifacts / "assets" / "/".join(key.path)
        if context.has_asset_partitions:
            path = path / context.asset_partition_key
        return path

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        if context.has_asset_key:  # lets `mochi status` tell when an edit of mochi.yaml made this stale
            signature = self.project.config.layer_signature(context.asset_spec.group_name or "")
            context.add_output_metadata({CONFIG_SIGNATURE_KEY: signature})
        if isinstance(obj, BaseModel) or (isinstance(obj, list) and all(isinstance(o, BaseModel) for o in obj)):
            write_asset_file(self._base(context), obj)
            return
        raise TypeError(
            f"Asset {context.asset_key.to_user_string()} returned {type(obj).__name__}; "
            "mochi assets return a pydantic record or a list of records."
        )

    def load_input(self, context: dg.InputContext) -> Any:
        base = self._base(context)
        for suffix in (".jsonl", ".json"):
            path = base.with_suffix(suffix)
            if path.exists():
                return _read(path)
        raise FileNotFoundError(
            f"No stored value for {context.asset_key.to_user_string()} under {base.parent}. "
            "Materialize it first (mochi run, or the Dagster UI)."
        )


def _qualname(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _read(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        header = json.loads(fh.readline())
        module, _, name = header["record"].partition(":")
        cls = getattr(importlib.import_module(module), name)
        if header["many"]:
            return [cls.model_validate_json(line) for line in fh if line.strip()]
        return cls.model_validate_json(fh.read())


def write_asset_file(base: str | Path, obj: BaseModel | list[BaseModel]) -> Path:
    """Store a record as ``<base>.json`` or a list of records as ``<base>.jsonl`` (atomically)."""
    base = Path(base)
    if isinstance(obj, BaseModel):
        header = {"record": _qualname(type(obj)), "many": False}
        return atomic_write_text(base.with_suffix(".json"), json.dumps(header) + "\n" + obj.model_dump_json())
    cls = type(obj[0]) if obj else BaseModel
    lines = [json.dumps({"record": _qualname(cls), "many": True}), *(o.model_dump_json() for o in obj)]
    return atomic_write_text(base.with_suffix(".jsonl"), "\n".join(lines) + "\n")


def read_asset_file(path: str | Path) -> Any:
    """Read a value stored by ``ArtifactIOManager`` (for the CLI and tests)."""
    return _read(Path(path))
