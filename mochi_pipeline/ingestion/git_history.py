"""Commit history from one streamed ``git log``: the options that make its output exact, the record stream, the parser.

``log_records`` runs one ``git log`` through GitPython (``as_process``) and cuts its stdout, as it
arrives, into one record per commit; ``parse_commit`` turns a record into a ``Commit`` with per-file
status, line counts and unified diff. The output options ignore user config that would change the
format (colours, prefixes, signatures, external diff drivers, text conversion).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import git

from mochi_pipeline.ingestion.git_urls import GitError
from mochi_pipeline.records import Commit, FileDiff

DIFF_OPTS = (
    "--no-color", "--no-ext-diff", "--no-textconv", "--no-relative", "--src-prefix=a/", "--dst-prefix=b/",
)
LOG_OPTS = ("--no-show-signature", "--encoding=UTF-8")
_CHUNK = 1 << 20
# Starts every commit in a `git log` stream; control bytes around a name no text file or message has.
_MARK = "%x01mochi-commit%x02"
_MARK_BYTES = b"\x01mochi-commit\x02"


def history_args(revs: Iterable[str], max_count: int, exclude: Iterable[str] = ()) -> list[str]:
    """``git log`` arguments for the commits reachable from any of ``revs`` (each once) and from none of ``exclude``."""
    fmt = f"--format={_MARK}%H%x00%P%x00%an%x00%ae%x00%cI%x00%B%x00"
    return [
        *LOG_OPTS, *DIFF_OPTS, "-z", "-M", "--raw", "--numstat", "-p", "--diff-merges=first-parent",
        f"--max-count={max_count}", fmt, *revs, *(f"^{sha}" for sha in exclude),
    ]


def changed_paths_args(rev: str) -> list[str]:
    """``git log`` arguments listing, per commit from ``rev`` back, its SHA, committer date and changed paths."""
    return [*LOG_OPTS, "-z", "--name-only", "--no-renames", f"--format={_MARK}%H%x00%cI", rev]


@contextmanager
def log_records(repo: git.Repo, args: list[str]) -> Iterator[Iterator[bytes]]:
    """``git log <args>`` as one process, its stdout yielded one commit record at a time.

    Leaving the block early kills the process: the rest of the output is not needed.
    """
    proc = repo.git.log(*args, as_process=True)
    # stderr drained on the side: a chatty git cannot then block on a full pipe while stdout is read.
    errors: list[bytes] = []
    drain = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
    drain.start()
    try:
        yield _records(proc, drain, errors)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.proc.wait()
        drain.join()
        proc.stdout.close()
        proc.stderr.close()


def _records(proc: git.Git.AutoInterrupt, drain: threading.Thread, errors: list[bytes]) -> Iterator[bytes]:
    pending: list[bytes] = []
    tail = len(_MARK_BYTES) - 1
    seen = b""  # the last `tail` bytes read: a marker may straddle reads (several, when they are short)
    while block := proc.stdout.read(_CHUNK):
        pending.append(block)
        window = seen + block
        seen = window[-tail:]
        if _MARK_BYTES not in window:
            continue
        parts = b"".join(pending).split(_MARK_BYTES)
        pending = [parts.pop()]
        yield from (p for p in parts if p)
    if proc.proc.wait() != 0:
        drain.join()
        raise GitError(f"`{' '.join(proc.args)}` failed: {b''.join(errors).decode('utf-8', 'replace').strip()}")
    last = b"".join(pending)
    if last:
        yield last


def parse_changed_paths(record: bytes) -> tuple[str, str, list[str]]:
    """(commit SHA, committer date, paths it changed) of one ``changed_paths_args`` record."""
    sha, date, names = record.split(b"\0", 2)
    names = names[1:] if names.startswith(b"\n") else names
    return sha.decode(), date.decode(), [raw.decode("utf-8", "surrogateescape") for raw in names.split(b"\0") if raw]


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _quote_path(path: str) -> str:
    """Quote a path the way git's diff header does (with core.quotepath=false)."""
    if not any(ch in '"\\' or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        return path
    escapes = {"\a": "\\a", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\v": "\\v", "\f": "\\f", "\r": "\\r",
               '"': '\\"', "\\": "\\\\"}
    body = "".join(escapes.get(ch, f"\\{ord(ch):03o}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch) for ch in path)
    return f'"{body}"'


def parse_commit(record: bytes, max_diff_bytes: int, tags: Mapping[str, list[str]] | None = None) -> Commit:
    """One ``history_args`` record as a ``Commit``; ``tags``: commit SHA -> names of the tags pointing at it."""
    sha, parents, name, email, date, message, rest = record.split(b"\0", 6)
    # After the format: git's NUL record terminator and a newline, then raw entries, numstat, NUL, patch.
    rest = rest.removeprefix(b"\0").removeprefix(b"\n")
    pos = 0
    raw: list[tuple[str, str, str]] = []  # (status, old_path, new_path)
    while rest.startswith(b":", pos):
        end = rest.index(b"\0", pos)
        status = rest[pos:end].split()[-1].decode()[:1]
        first_end = rest.index(b"\0", end + 1)
        # Paths that are not UTF-8 are kept readable (U+FFFD for the bad bytes): records must serialise as JSON.
        first = rest[end + 1 : first_end].decode("utf-8", "replace")
        pos = first_end + 1
        if status in "RC":
            second_end = rest.index(b"\0", pos)
            raw.append((status, first, rest[pos:second_end].decode("utf-8", "replace")))
            pos = second_end + 1
        else:
            raw.append((status, first, first))
    counts: list[tuple[int, int, bool]] = []
    for status, _, _ in raw:
        end = rest.index(b"\0", pos)
        added, deleted, _path = rest[pos:end].split(b"\t", 2)
        pos = end + 1
        if status in "RC":  # renames list "added\tdeleted\t" then old\0new\0
            pos = rest.index(b"\0", rest.index(b"\0", pos) + 1) + 1
        binary = added == b"-"
        counts.append((0 if binary else int(added), 0 if binary else int(deleted), binary))
    sections = _split_patch(_decode(rest[pos:].removeprefix(b"\0")))
    files = []
    for (status, old, new), (added, deleted, binary) in zip(raw, counts, strict=True):
        header = f"diff --git {_quote_path('a/' + old)} {_quote_path('b/' + new)}"
        diff = "" if binary else sections.get(header, "")
        files.append(FileDiff(
            path=new,
            old_path=old if status in "RC" else "",
            status=status if status in "AMDR" else ("A" if status == "C" else "M"),
            additions=added,
            deletions=deleted,
            diff=diff if len(diff.encode()) <= max_diff_bytes else "",
            binary=binary,
        ))
    sha_text = _decode(sha)
    return Commit(
        sha=sha_text, parents=_decode(parents).split(), author_name=_decode(name), author_email=_decode(email),
        date=_decode(date), message=_decode(message).strip("\n"), files=files,
        tags=list((tags or {}).get(sha_text, [])),
    )


def _split_patch(patch: str) -> dict[str, str]:
    """Patch text per ``diff --git`` header (a type change yields two sections under one header)."""
    sections: dict[str, str] = {}
    current: list[str] = []
    for line in patch.splitlines(keepends=True):
        if line.startswith("diff --git ") and current:
            _add_section(sections, current)
            current = []
        current.append(line)
    if current and current[0].startswith("diff --git "):
        _add_section(sections, current)
    return sections


def _add_section(sections: dict[str, str], lines: list[str]) -> None:
    header = lines[0].rstrip("\n")
    sections[header] = sections.get(header, "") + "".join(lines)


def with_tags(commits: list[Commit], tags: Mapping[str, list[str]]) -> list[Commit]:
    """``commits`` with ``tags`` as they are now (a history kept from an earlier read may predate a tag)."""
    return [c if c.tags == tags.get(c.sha, []) else c.model_copy(update={"tags": list(tags.get(c.sha, []))})
            for c in commits]
