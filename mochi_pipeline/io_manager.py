"""The IO manager: asset values stored as readable JSON/JSONL files under the artifacts root.

A pydantic record becomes ``<key>.json``; a list of records becomes ``<key>.jsonl`` whose first
line names the record type. A partitioned asset returns ``{partition key: value}`` and each partition
is stored as ``<key>/<partition>.jsonl``; an unpartitioned asset reading it gets the partitions'
lists joined, in partition order. Both are written atomically. Reading looks the named type up in
mochi's own record registry (never imports what a file names), and a damaged file is an error
naming the file and the fix.
"""

# No `from __future__ import annotations` here: Dagster reads the resource's field annotations at
# class creation.

import importlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dagster as dg
from pydantic import BaseModel, ValidationError

from mochi_pipeline.records import Record, record_name
from mochi_pipeline.storage import atomic_write_text


class Unchanged(BaseModel):
    """Returned by an asset whose inputs and settings did not change: the stored value stays as it is."""

    run_id: str


class ArtifactError(RuntimeError):
    """A stored artifact cannot be read; the message names the file and how to recover."""


def asset_base(root: str | Path, key: dg.AssetKey) -> Path:
    """``<root>/assets/<key path>`` without suffix (``.json`` or ``.jsonl`` is added by what is stored)."""
    return Path(root) / "assets" / "/".join(key.path)


def partition_base(root: str | Path, key: dg.AssetKey, partition: str) -> Path:
    """``<root>/assets/<key path>/<partition>``, the partition key quoted into one file name."""
    return asset_base(root, key) / quote(partition, safe="").replace(".", "%2E")


class ArtifactIOManager(dg.ConfigurableIOManager):
    """Stores asset values as files under ``<root>/assets/``."""

    root: str

    def _key(self, context: dg.OutputContext | dg.InputContext) -> dg.AssetKey:
        return context.asset_key if context.has_asset_key else dg.AssetKey(context.get_identifier())

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        key = self._key(context)
        if context.has_asset_partitions:
            if not isinstance(obj, dict) or set(obj) != set(context.asset_partition_keys):
                raise TypeError(f"Partitioned asset {key.to_user_string()} must return {{partition key: value}} "
                                f"for its partitions {sorted(context.asset_partition_keys)}.")
            for partition, value in obj.items():
                _store(partition_base(self.root, key, partition), value, key)
            return
        _store(asset_base(self.root, key), obj, key)

    def load_input(self, context: dg.InputContext) -> Any:
        key = self._key(context)
        if not context.has_asset_partitions:
            return _load(asset_base(self.root, key), key)
        values = [_load(partition_base(self.root, key, p), key, p) for p in sorted(context.asset_partition_keys)]
        return [record for value in values for record in value]


def _store(base: Path, obj: Any, key: dg.AssetKey) -> None:
    if obj is None or isinstance(obj, Unchanged):
        return
    if isinstance(obj, Record) or (isinstance(obj, list) and all(isinstance(o, Record) for o in obj)):
        write_asset_file(base, obj)
        return
    raise TypeError(
        f"Asset {key.to_user_string()} returned {type(obj).__name__}; "
        "mochi assets return a record (mochi_pipeline.records.Record) or a list of records."
    )


def _load(base: Path, key: dg.AssetKey, partition: str | None = None) -> Any:
    path = stored_file(base)
    if path is None:
        what = key.to_user_string() + (f" partition {partition!r}" if partition is not None else "")
        raise FileNotFoundError(f"No stored value for {what} under {base.parent}. "
                                "Materialize it first (mochi run, or the Dagster UI).")
    return read_asset_file(path)


def stored_file(base: Path) -> Path | None:
    """The file stored for ``base`` (``.jsonl`` or ``.json``), or None."""
    for suffix in (".jsonl", ".json"):
        if base.with_suffix(suffix).is_file():
            return base.with_suffix(suffix)
    return None


def write_asset_file(base: str | Path, obj: Record | list[Record]) -> Path:
    """Store a record as ``<base>.json`` or a list of records as ``<base>.jsonl`` (atomically)."""
    base = Path(base)
    if isinstance(obj, Record):
        header = {"record": record_name(type(obj)), "many": False}
        return atomic_write_text(base.with_suffix(".json"), json.dumps(header) + "\n" + obj.model_dump_json())
    name = record_name(type(obj[0])) if obj else ""
    lines = [json.dumps({"record": name, "many": True}), *(o.model_dump_json() for o in obj)]
    return atomic_write_text(base.with_suffix(".jsonl"), "\n".join(lines) + "\n")


def _record_type(name: str) -> type[Record] | None:
    """The registered record type ``name``; a module of mochi's own is imported first if need be."""
    module = name.partition(":")[0]
    if name not in Record.registry and module.startswith("mochi_pipeline."):
        try:
            importlib.import_module(module)
        except ImportError:
            return None
    return Record.registry.get(name)


def read_asset_file(path: str | Path) -> Any:
    """Read a value stored by ``ArtifactIOManager``; only mochi's own record types are accepted."""
    path = Path(path)
    fix = "Delete it and run `mochi run` again to rebuild it."
    with path.open(encoding="utf-8") as fh:
        try:
            header = json.loads(fh.readline())
            name, many = header["record"], header["many"]
        except (ValueError, KeyError, TypeError):
            raise ArtifactError(f"{path} has no valid header line (a damaged or foreign file). {fix}") from None
        if many and not name:  # an empty list
            return []
        cls = _record_type(name)
        if cls is None:
            raise ArtifactError(f"{path} names record type {name!r}, which is not one of mochi's records. {fix}")
        try:
            if many:
                return [cls.model_validate_json(line) for line in fh if line.strip()]
            return cls.model_validate_json(fh.read())
        except ValidationError as err:
            first = err.errors()[0]
            raise ArtifactError(f"{path} is damaged or truncated ({first['msg']} at "
                                f"{'.'.join(map(str, first['loc'])) or 'top level'}). {fix}") from None
