"""Per-file chunking cache, so an unchanged file is never parsed twice.

Key: (git blob SHA, language, chunking settings signature, chunker version). The cached value is
path-independent (``FileChunks``), so a file that was moved or copied is a hit too. One small JSON
file per key under ``<artifacts>/cache/chunks/<2 hex>/<key>.json``; written to a temp file and
renamed, so a reader sees a whole entry or none. An unreadable entry counts as a miss and is
rewritten: the cache is always safe to delete.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from mochi_pipeline.preprocessing.settings import ChunkingSettings
from mochi_pipeline.storage import atomic_write_bytes, content_hash


def cache_key(blob_sha: str, text: str, language: str, settings: ChunkingSettings, version: str) -> str:
    # A record without a blob SHA (built in memory) is keyed by its content instead.
    identity = blob_sha or "content:" + content_hash(text)
    return content_hash(version, identity, language, settings.signature())


class ChunkCache:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        try:
            return orjson.loads(self._path(key).read_bytes())
        except (OSError, ValueError):
            return None

    def put(self, key: str, value: dict) -> None:
        try:
            data = orjson.dumps(value)
        except orjson.JSONEncodeError:  # not representable (lone surrogates): simply not cached
            return
        # No fsync: an entry lost in a crash is recomputed, and the rename keeps entries whole.
        atomic_write_bytes(self._path(key), data, fsync=False)
