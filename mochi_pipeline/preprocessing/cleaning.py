"""Files and commits as mochi learns from them: filtered (with counted reasons) and scrubbed.

Every file passes the filters (``file_filters``), then the scrubber: a file that is nothing but
secrets is dropped, every other secret and piece of personal data is replaced by its placeholder.
A changed file gets the blob id of its new text, so caches keyed by content never mix the two.
Commit messages and diffs are scrubbed the same way (a vendored or generated file's diff is
emptied). Results are cached per (file blob | commit), settings and version, so a commit re-scrubs
only what it touched; large inputs are scrubbed in the shared worker pool.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mochi_pipeline.preprocessing import file_filters
from mochi_pipeline.preprocessing.chunk_cache import ChunkCache
from mochi_pipeline.preprocessing.parallel import shared_pool
from mochi_pipeline.preprocessing.scrubber import Scrubber
from mochi_pipeline.preprocessing.settings import FilterSettings, ScrubSettings
from mochi_pipeline.records import Commit, SourceFile
from mochi_pipeline.storage import content_hash

# Bump when scrubbing changes what it finds or writes: part of every cache key and the assets' code versions.
CLEANER_VERSION = "4"
SECRET_FILE = "secret_file"
PARALLEL_MIN_BYTES = 1_000_000


@dataclass
class CleanStats:
    dropped: Counter = field(default_factory=Counter)  # reason -> files
    replaced: Counter = field(default_factory=Counter)  # secret or personal-data type -> replacements
    changed: int = 0  # files (or commits) with at least one replacement
    cache_hits: int = 0
    repository_license: str = ""


def blob_id(text: str) -> str:
    """The id git gives a blob with this text (what ``SourceFile.sha`` holds)."""
    data = text.encode("utf-8", "surrogatepass")
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


_scrubbers: dict[str, Scrubber] = {}


def _scrubber(settings: ScrubSettings) -> Scrubber:
    key = settings.signature()
    if key not in _scrubbers:
        _scrubbers[key] = Scrubber(settings)
    return _scrubbers[key]


def _scrub_batch(tasks: list[tuple[str, str, str]], settings: ScrubSettings, cache_root: str | None) -> list[dict]:
    """Worker: (cache key, path, text) -> {"drop": bool, "text": new text or None, "counts": {type: n}}."""
    scrubber = _scrubber(settings)
    cache = ChunkCache(cache_root) if cache_root else None
    out = []
    for key, path, text in tasks:
        if scrubber.secret_file(path, text):
            result = {"drop": True, "text": None, "counts": {}}
        else:
            scrubbed = scrubber.scrub(text, path)
            result = {"drop": False, "text": scrubbed.text if scrubbed.counts else None,
                      "counts": dict(scrubbed.counts)}
        if cache is not None:
            cache.put(key, result)
        out.append(result)
    return out


def _scrub_all(tasks: list[tuple[str, str, str]], settings: ScrubSettings, cache_dir: Path | None, workers: int,
               stats: CleanStats) -> dict[str, dict]:
    """Scrub results by cache key: cached ones read, the rest computed (in the pool when large)."""
    cache = ChunkCache(cache_dir) if cache_dir is not None else None
    results: dict[str, dict] = {}
    todo = []
    for task in tasks:
        hit = cache.get(task[0]) if cache is not None else None
        if isinstance(hit, dict) and set(hit) == {"drop", "text", "counts"}:
            results[task[0]] = hit
            stats.cache_hits += 1
        else:
            todo.append(task)
    root = str(cache_dir) if cache_dir is not None else None
    size = max(1, -(-len(todo) // (4 * workers)))
    batches = [todo[i:i + size] for i in range(0, len(todo), size)]
    if workers > 1 and len(batches) > 1 and sum(len(t[2]) for t in todo) >= PARALLEL_MIN_BYTES:
        outputs = list(shared_pool(workers).map(_scrub_batch, batches, [settings] * len(batches),
                                                [root] * len(batches)))
    else:
        outputs = [_scrub_batch(b, settings, root) for b in batches]
    for batch, output in zip(batches, outputs, strict=True):
        for task, result in zip(batch, output, strict=True):
            results[task[0]] = result
    return results


def _key(kind: str, identity: str, path: str, settings: ScrubSettings) -> str:
    return content_hash(CLEANER_VERSION, kind, identity, path, settings.signature())


def clean_files(files: list[SourceFile], filters: FilterSettings, scrub: ScrubSettings,
                cache_dir: Path | None = None, workers: int = 2) -> tuple[list[SourceFile], CleanStats]:
    """The files worth learning from, scrubbed; what was dropped and replaced, counted."""
    stats = CleanStats(repository_license=file_filters.repository_license(files))
    kept: list[SourceFile] = []
    for f in files:
        reason = file_filters.drop_reason(f, filters, stats.repository_license)
        if reason:
            stats.dropped[reason] += 1
        else:
            kept.append(f)
    tasks = [(_key("file", f.sha or blob_id(f.text), f.path, scrub), f.path, f.text) for f in kept]
    results = _scrub_all(tasks, scrub, cache_dir, workers, stats)
    out = []
    for f, (key, _, _) in zip(kept, tasks, strict=True):
        result = results[key]
        if result["drop"]:
            stats.dropped[SECRET_FILE] += 1
            continue
        stats.replaced.update(result["counts"])
        if result["text"] is not None:
            stats.changed += 1
            f = f.model_copy(update={"text": result["text"], "sha": blob_id(result["text"]),
                                     "size": len(result["text"].encode("utf-8"))})
        out.append(f)
    return out, stats


def clean_commits(commits: list[Commit], scrub: ScrubSettings, filters: FilterSettings,
                  cache_dir: Path | None = None, workers: int = 2) -> tuple[list[Commit], CleanStats]:
    """Commits with scrubbed messages and diffs; the diff of a secret file, and of a file the filters call
    vendored or generated (a lock file, say: nothing to learn from its changes), is emptied."""
    stats = CleanStats()
    tasks = []
    for c in commits:
        tasks.append((_key("message", c.sha, "", scrub), "", c.message))
        for d in c.files:
            if d.diff and (reason := file_filters.path_drop_reason(d.path, filters)):
                stats.dropped[f"diff:{reason}"] += 1  # not scrubbed: emptied below
            elif d.diff:
                tasks.append((_key("diff", c.sha, d.path, scrub), d.path, d.diff))
    results = _scrub_all(tasks, scrub, cache_dir, workers, stats)

    def cleaned(key: str, original: str) -> str:
        if key not in results:
            return ""  # a filtered file's diff
        result = results[key]
        stats.replaced.update(result["counts"])
        if result["drop"]:
            return ""
        return result["text"] if result["text"] is not None else original

    out = []
    for c in commits:
        message = cleaned(_key("message", c.sha, "", scrub), c.message)
        files = [d.model_copy(update={"diff": cleaned(_key("diff", c.sha, d.path, scrub), d.diff)}) if d.diff else d
                 for d in c.files]
        if message != c.message or any(a.diff != b.diff for a, b in zip(files, c.files, strict=True)):
            stats.changed += 1
            c = c.model_copy(update={"message": message, "files": files})
        out.append(c)
    return out, stats
