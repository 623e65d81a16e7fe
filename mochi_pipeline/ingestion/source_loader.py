"""Tracked files at a revision → ``SourceFile`` records, every skipped file counted by reason."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from functools import lru_cache

from mochi_pipeline.ingestion.git_connector import Repository, TreeEntry
from mochi_pipeline.ingestion.languages import has_binary_extension, language_for
from mochi_pipeline.ingestion.settings import SourceSettings
from mochi_pipeline.records import SourceFile

# Git's own heuristic: a NUL byte in the first 8000 bytes means binary.
BINARY_SNIFF_BYTES = 8000
# Bound on the bytes one `git cat-file --batch` call returns, so memory stays flat on big repositories.
BATCH_BYTES = 64 << 20

SKIP_EXCLUDED = "excluded"
SKIP_SUBMODULE = "submodule"
SKIP_NON_UTF8_PATH = "non_utf8_path"
SKIP_SYMLINK = "symlink"
SKIP_TOO_LARGE = "too_large"
SKIP_BINARY = "binary"
SKIP_NOT_UTF8 = "not_utf8"


@lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """``**`` spans directories, ``*`` and ``?`` stay within one path segment."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def glob_match(path: str, pattern: str) -> bool:
    """Match a '/'-separated path; a pattern without '/' matches the file name in any directory."""
    target = path if "/" in pattern else path.rsplit("/", 1)[-1]
    return _glob_regex(pattern).match(target) is not None


def is_selected(path: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    return any(glob_match(path, p) for p in include) and not any(glob_match(path, p) for p in exclude)


def _batches(entries: list[TreeEntry]) -> Iterator[list[TreeEntry]]:
    batch: list[TreeEntry] = []
    total = 0
    for entry in entries:
        if batch and total + entry.size > BATCH_BYTES:
            yield batch
            batch, total = [], 0
        batch.append(entry)
        total += entry.size
    if batch:
        yield batch


def load_source_files(
    repo: Repository, rev: str, settings: SourceSettings
) -> tuple[list[SourceFile], dict[str, int]]:
    """Text files tracked at ``rev`` that pass the filters, sorted by path, and skip counts by reason."""
    skipped: Counter[str] = Counter()
    candidates: list[TreeEntry] = []
    for entry in repo.list_files(rev):
        if entry.is_submodule:  # another repository: never fetched
            skipped[SKIP_SUBMODULE] += 1
        elif not entry.has_utf8_path:
            skipped[SKIP_NON_UTF8_PATH] += 1
        elif not is_selected(entry.path, settings.include, settings.exclude):
            skipped[SKIP_EXCLUDED] += 1
        elif entry.is_symlink:
            skipped[SKIP_SYMLINK] += 1
        elif entry.size > settings.max_file_bytes:
            skipped[SKIP_TOO_LARGE] += 1
        elif has_binary_extension(entry.path):
            skipped[SKIP_BINARY] += 1
        else:
            candidates.append(entry)

    texts: dict[str, str] = {}
    for batch in _batches(candidates):
        blobs = repo.read_blobs(e.sha for e in batch)
        for entry in batch:
            data = blobs[entry.sha]
            if b"\0" in data[:BINARY_SNIFF_BYTES]:
                skipped[SKIP_BINARY] += 1
                continue
            try:
                texts[entry.path] = data.decode("utf-8")
            except UnicodeDecodeError:
                skipped[SKIP_NOT_UTF8] += 1

    kept = [e for e in candidates if e.path in texts]
    last = repo.last_commits(rev, [e.path for e in kept])
    files = [
        SourceFile(
            path=e.path,
            language=language_for(e.path),
            text=texts[e.path],
            sha=e.sha,
            size=e.size,
            last_commit_sha=last.get(e.path, ("", ""))[0],
            last_commit_date=last.get(e.path, ("", ""))[1],
        )
        for e in sorted(kept, key=lambda e: e.path)
    ]
    return files, dict(sorted(skipped.items()))
