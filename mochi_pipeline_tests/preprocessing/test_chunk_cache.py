"""Per-file chunk cache and the process pool: same chunks, fewer parses."""

from __future__ import annotations

import json

import numpy as np

from mochi_pipeline.preprocessing.chunk_cache import ChunkCache
from mochi_pipeline.preprocessing.code_chunker import chunk_files
from mochi_pipeline.preprocessing.deduplicator import signed_texts
from mochi_pipeline.preprocessing.settings import ChunkingSettings, DedupSettings
from mochi_pipeline.records import SourceFile
from mochi_pipeline_tests import repo_factory as rf


def _file(path: str, text: str, sha: str, language: str = "python") -> SourceFile:
    return SourceFile(path=path, language=language, text=text, sha=sha, size=len(text))


def test_second_run_is_served_from_the_cache(tmp_path):
    files = [_file("pkg/core.py", rf.CORE_PY, "a" * 40), _file("pkg/util.py", rf.UTIL_PY, "b" * 40),
             _file("web/emitter.js", rf.JS, "c" * 40, "javascript")]
    settings = ChunkingSettings()
    first, stats1 = chunk_files(files, settings, tmp_path / "cache", workers=1)
    assert stats1.cache_hits == 0 and stats1.modes == {"ast": 3}
    entries = sorted((tmp_path / "cache").rglob("*.json"))
    assert len(entries) == 3

    second, stats2 = chunk_files(files, settings, tmp_path / "cache", workers=1)
    assert stats2.cache_hits == 3
    assert second == first

    # A moved file (same blob) is a hit too, and the chunks carry the new path.
    moved, stats3 = chunk_files([_file("lib/core.py", rf.CORE_PY, "a" * 40)], settings, tmp_path / "cache")
    assert stats3.cache_hits == 1 and {c.path for c in moved} == {"lib/core.py"}
    assert [c.text for c in moved] == [c.text for c in first if c.path == "pkg/core.py"]

    # Other settings are another key; an unreadable entry is recomputed and rewritten.
    _, stats4 = chunk_files(files, ChunkingSettings(max_tokens=256), tmp_path / "cache", workers=1)
    assert stats4.cache_hits == 0
    entries[0].write_text("{not json", encoding="utf-8")
    entries[1].write_text('{"pieces": 3}', encoding="utf-8")
    third, stats5 = chunk_files(files, settings, tmp_path / "cache", workers=1)
    assert stats5.cache_hits == 1 and third == first
    assert all(set(json.loads(e.read_text(encoding="utf-8"))) == {"mode", "pieces", "dropped_punctuation"}
               for e in entries)


def test_cache_is_used_instead_of_parsing(tmp_path):
    file = _file("pkg/core.py", rf.CORE_PY, "d" * 40)
    chunk_files([file], ChunkingSettings(), tmp_path / "cache", workers=1)
    (entry,) = (tmp_path / "cache").rglob("*.json")
    cached = json.loads(entry.read_text(encoding="utf-8"))
    cached["pieces"][0]["text"] = "# served from the cache"
    ChunkCache(tmp_path / "cache").put(entry.stem, cached)
    chunks, _ = chunk_files([file], ChunkingSettings(), tmp_path / "cache", workers=1)
    assert chunks[0].text == "# served from the cache"


def test_two_workers_give_the_serial_result(tmp_path):
    files = [_file(f"m{i}.py", rf.CORE_PY.replace("Point", f"Point{i}") * 5, "") for i in range(8)]
    serial, _ = chunk_files(files, ChunkingSettings(), None, workers=1)
    parallel, stats = chunk_files(files, ChunkingSettings(), tmp_path / "cache", workers=2, parallel_min_bytes=0)
    assert parallel == serial and stats.modes == {"ast": 8}
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 8

    texts = [c.text for c in serial]
    one = [sig for sig, _ in signed_texts(texts, DedupSettings(), workers=1)]
    two = [sig for sig, _ in signed_texts(texts, DedupSettings(), workers=2, parallel_min_bytes=0)]
    assert len(one) == len(two) == len(texts)
    assert all(np.array_equal(a, b) for a, b in zip(one, two, strict=True))
