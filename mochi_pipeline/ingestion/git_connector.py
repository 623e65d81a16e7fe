"""Read a git repository (local work tree or cached clone of a remote) through the git CLI.

Every call goes through ``git`` in a subprocess with options that ignore user config which would
change the output format (colours, prefixes, signatures, external diff drivers), so parsing is exact.
Bulk work uses one process per pass (``cat-file --batch``, one ``git log`` stream), never one per file.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from mochi_pipeline.records import Commit, FileDiff
from mochi_pipeline.storage import atomic_directory, content_hash, file_lock

ALLOWED_SCHEMES = ("https", "http", "ssh", "git", "file")
# scp-like syntax git accepts for ssh: user@host:path (no "//" right after the colon).
_SCP_LIKE = re.compile(r"^[A-Za-z0-9._~+-]+@[A-Za-z0-9][A-Za-z0-9.-]*:(?!//)\S+$")
# Git's own `<transport>::<address>` syntax (ext::, fd::, remote helpers): never allowed.
_TRANSPORT_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Options that keep git's output parseable whatever the user's config says.
_DIFF_OPTS = (
    "--no-color", "--no-ext-diff", "--no-textconv", "--no-relative", "--src-prefix=a/", "--dst-prefix=b/",
)
_LOG_OPTS = ("--no-show-signature", "--encoding=UTF-8")
_CHUNK = 1 << 20
# Starts every commit in a `git log` stream; control bytes around a name no text file or message has.
_MARK = "%x01mochi-commit%x02"
_MARK_BYTES = b"\x01mochi-commit\x02"


_CREDENTIALS = re.compile(r"(://)[^/\s@]+@")


def redact(text: str) -> str:
    """``text`` with the user/password/token part of any URL in it replaced by ``***``."""
    return _CREDENTIALS.sub(r"\1***@", text)


class GitError(RuntimeError):
    """A git problem worded for the person running mochi: what failed and how to fix it.

    Credentials in URLs (``https://user:token@host``) never reach the message, so never a log.
    ``retryable``: a clone, fetch or timeout that may work later (the network); other errors need a fix.
    """

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(redact(message))
        self.retryable = retryable


def is_remote_source(source: str) -> bool:
    """True when ``repo.source`` names a remote (URL, scp-like, or a git transport), not a local path."""
    s = source.strip()
    return bool(_SCHEME.match(s) or _TRANSPORT_PREFIX.match(s) or _SCP_LIKE.match(s))


def validate_remote_url(url: str) -> str:
    """Return ``url`` if it is safe to hand to ``git clone``; raise ``GitError`` otherwise."""
    fix = f"Use one of {', '.join(s + '://' for s in ALLOWED_SCHEMES)} or user@host:path."
    if not url:
        raise GitError("repo.source is empty. Set it to a local path or a remote URL.")
    if url.startswith("-"):
        raise GitError(f"Refusing repository URL {url!r}: it starts with '-' and git could read it as an option. {fix}")
    transport = _TRANSPORT_PREFIX.match(url)
    if transport:
        raise GitError(
            f"Refusing repository URL {url!r}: the {transport.group(0)} transport can run commands or open "
            f"arbitrary descriptors. {fix}"
        )
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise GitError(f"Refusing repository URL {url!r}: it contains whitespace or control characters. {fix}")
    scheme = _SCHEME.match(url)
    if scheme:
        name = scheme.group(1).lower()
        if name not in ALLOWED_SCHEMES:
            raise GitError(f"Refusing repository URL {url!r}: scheme {name!r} is not allowed. {fix}")
        host = urlsplit(url).hostname or ""
        if host.startswith("-"):
            raise GitError(f"Refusing repository URL {url!r}: host {host!r} starts with '-'. {fix}")
        if name != "file" and not host:
            raise GitError(f"Repository URL {url!r} has no host. {fix}")
        return url
    if _SCP_LIKE.match(url):
        return url
    raise GitError(f"{url!r} is not a repository URL git can clone safely. {fix}")


@dataclass(frozen=True)
class TreeEntry:
    """One tracked file at a revision (from ``git ls-tree -r -l``)."""

    path: str
    sha: str
    size: int
    mode: str

    @property
    def is_symlink(self) -> bool:
        return self.mode == "120000"

    @property
    def is_submodule(self) -> bool:
        return self.mode == "160000"

    @property
    def has_utf8_path(self) -> bool:
        """False for a path that is not valid UTF-8 (decoded with surrogate escapes: unusable as text)."""
        try:
            self.path.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True


def _env() -> dict[str, str]:
    # Never wait for a password on a terminal, and refuse dangerous protocols even in submodules/redirects.
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ALLOW_PROTOCOL": ":".join(ALLOWED_SCHEMES)}


def _run_git(
    args: Iterable[str], *, cwd: Path | None = None, input: bytes | None = None, timeout: float | None = None
) -> bytes:
    cmd = ["git", "-c", "protocol.ext.allow=never", "-c", "core.quotepath=false", *args]
    try:
        out = subprocess.run(
            cmd, cwd=cwd, input=input, capture_output=True, env=_env(), timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise GitError("The `git` command was not found. Install git and make sure it is on PATH.") from None
    except subprocess.TimeoutExpired:
        raise GitError(
            f"`git {' '.join(args)}` did not finish within {timeout:.0f} s. "
            "Check the network, or raise repo.git_timeout_s in mochi.yaml.", retryable=True,
        ) from None
    if out.returncode != 0:
        raise _CommandFailed(cmd, out.returncode, out.stderr.decode("utf-8", "replace").strip())
    return out.stdout


class _CommandFailed(GitError):
    def __init__(self, cmd: list[str], code: int, stderr: str) -> None:
        self.stderr = stderr
        super().__init__(f"`{' '.join(cmd)}` failed with exit code {code}: {stderr}")


class Repository:
    """A git repository to read from: ``path`` is a work tree's top level or a bare repository."""

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self.source = source

    def git(self, *args: str, input: bytes | None = None) -> bytes:
        return _run_git(args, cwd=self.path, input=input)

    # --- revisions -------------------------------------------------------------------------

    def resolve_rev(self, rev: str) -> str:
        """Full commit SHA of a branch, tag, or (abbreviated) commit."""
        if not rev or rev.startswith("-") or any(ch.isspace() for ch in rev):
            raise GitError(f"repo.rev = {rev!r} is not a valid revision. Use a branch, tag or commit SHA.")
        try:
            out = self.git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
        except _CommandFailed:
            raise GitError(
                f"Unknown revision {rev!r} in {self.source}. {self._known_refs_hint()} "
                "Set repo.rev in mochi.yaml to one of them or to a commit SHA."
            ) from None
        return out.decode().strip()

    def _known_refs_hint(self) -> str:
        out = self.git("for-each-ref", "--count=20", "--format=%(refname:short)", "refs/heads", "refs/tags")
        names = out.decode("utf-8", "replace").split()
        return f"Known branches and tags: {', '.join(names)}." if names else "It has no branches or tags."

    def has_commits(self) -> bool:
        return bool(self.git("rev-list", "-n", "1", "--all").strip())

    def has_commit(self, sha: str) -> bool:
        try:
            self.git("cat-file", "-e", f"{sha}^{{commit}}")
        except _CommandFailed:
            return False
        return True

    # --- files -----------------------------------------------------------------------------

    def list_files(self, rev: str) -> list[TreeEntry]:
        """Tracked files at ``rev``, and submodules (listed, never fetched): path, object SHA, size and mode."""
        sha = self.resolve_rev(rev)
        entries = []
        for record in self.git("ls-tree", "-r", "-l", "-z", "--full-tree", sha).split(b"\0"):
            if not record:
                continue
            meta, _, path = record.partition(b"\t")
            mode, kind, blob, size = meta.split()
            if kind not in (b"blob", b"commit"):
                continue
            entries.append(TreeEntry(path.decode("utf-8", "surrogateescape"), blob.decode(),
                                     int(size) if size.isdigit() else 0, mode.decode()))
        return entries

    def read_blob(self, sha: str) -> bytes:
        return self.git("cat-file", "blob", sha)

    def read_blobs(self, shas: Iterable[str]) -> dict[str, bytes]:
        """Contents of many blobs from one ``git cat-file --batch`` process."""
        wanted = list(dict.fromkeys(shas))
        if not wanted:
            return {}
        out = self.git("cat-file", "--batch", input="".join(f"{s}\n" for s in wanted).encode())
        blobs: dict[str, bytes] = {}
        pos = 0
        for sha in wanted:
            end = out.index(b"\n", pos)
            header = out[pos:end].split()
            if len(header) != 3:
                raise GitError(f"Object {sha} is missing from {self.source}; the clone may be damaged (delete it).")
            size = int(header[2])
            blobs[sha] = out[end + 1 : end + 1 + size]
            pos = end + 1 + size + 1
        return blobs

    def last_commits(self, rev: str, paths: Iterable[str]) -> dict[str, tuple[str, str]]:
        """``path -> (commit SHA, ISO committer date)`` of the newest commit touching it, in one log pass."""
        wanted = set(paths)
        found: dict[str, tuple[str, str]] = {}
        if not wanted:
            return found
        args = [
            "log", *_LOG_OPTS, "-z", "--name-only", "--no-renames", f"--format={_MARK}%H%x00%cI", self.resolve_rev(rev),
        ]
        with _stream(args, self.path) as chunks:
            for chunk in chunks:
                sha, date, names = chunk.split(b"\0", 2)
                names = names[1:] if names.startswith(b"\n") else names
                for raw in names.split(b"\0"):
                    name = raw.decode("utf-8", "surrogateescape")
                    if name in wanted and name not in found:
                        found[name] = (sha.decode(), date.decode())
                if len(found) == len(wanted):
                    break
        return found

    # --- history ---------------------------------------------------------------------------

    def is_ancestor(self, ancestor: str, rev: str) -> bool:
        try:
            self.git("merge-base", "--is-ancestor", ancestor, rev)
        except _CommandFailed:
            return False
        return True

    def iter_commits(self, rev: str, max_count: int, max_diff_bytes: int = 200_000,
                     since: str | None = None) -> Iterator[Commit]:
        """Commits reachable from ``rev`` (and not from ``since``), newest first, with per-file status,
        line counts and diffs.

        Merges keep all parents and carry their diff against the first parent. A file diff longer
        than ``max_diff_bytes`` keeps its line counts but an empty ``diff``.
        """
        if max_count <= 0:
            return
        fmt = f"--format={_MARK}%H%x00%P%x00%an%x00%ae%x00%cI%x00%B%x00"
        exclude = [f"^{self.resolve_rev(since)}"] if since else []
        args = [
            "log", *_LOG_OPTS, *_DIFF_OPTS, "-z", "-M", "--raw", "--numstat", "-p",
            "--diff-merges=first-parent", f"--max-count={max_count}", fmt, self.resolve_rev(rev), *exclude,
        ]
        with _stream(args, self.path) as chunks:
            for chunk in chunks:
                try:
                    yield _parse_commit(chunk, max_diff_bytes)
                except (ValueError, IndexError) as err:
                    raise GitError(
                        f"Could not read commit {_decode(chunk[:40])} of {self.source} ({err}). "
                        "Lower repo.max_commits to skip it, and report the repository layout that caused it."
                    ) from None


class _stream:
    """Context manager over ``git <args>`` stdout, yielding one record per commit marker."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.cmd = ["git", "-c", "core.quotepath=false", *args]
        self.cwd = cwd

    def __enter__(self) -> Iterator[bytes]:
        # stderr to a file: a chatty git cannot then block on a full pipe while we read stdout.
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, stdout=subprocess.PIPE, stderr=self.stderr, env=_env())
        return self._records()

    def _records(self) -> Iterator[bytes]:
        assert self.proc.stdout is not None
        pending: list[bytes] = []
        tail = len(_MARK_BYTES) - 1  # a marker may straddle two reads
        while block := self.proc.stdout.read(_CHUNK):
            pending.append(block)
            if _MARK_BYTES not in (pending[-2][-tail:] if len(pending) > 1 else b"") + block:
                continue
            parts = b"".join(pending).split(_MARK_BYTES)
            pending = [parts.pop()]
            yield from (p for p in parts if p)
        if self.proc.wait() != 0:
            self.stderr.seek(0)
            raise GitError(f"`{' '.join(self.cmd)}` failed: {self.stderr.read().decode('utf-8', 'replace').strip()}")
        last = b"".join(pending)
        if last:
            yield last

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:  # stopped early: the rest of the output is not needed
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.stderr.close()


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


def _parse_commit(chunk: bytes, max_diff_bytes: int) -> Commit:
    sha, parents, name, email, date, message, rest = chunk.split(b"\0", 6)
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
    return Commit(
        sha=_decode(sha), parents=_decode(parents).split(), author_name=_decode(name), author_email=_decode(email),
        date=_decode(date), message=_decode(message).strip("\n"), files=files,
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


# --- opening --------------------------------------------------------------------------------


def open_repository(source: str, cache_dir: str | os.PathLike, timeout_s: float = 600,
                    fetch: bool = True) -> Repository:
    """Open ``source``: a local repository in place, or a remote cloned (then fetched) under ``cache_dir``.

    ``fetch=False`` reads an existing clone as it is (a commit already observed is there to read).
    """
    if is_remote_source(source):
        repo = _open_remote(source, Path(cache_dir), timeout_s, fetch)
    else:
        repo = _open_local(source)
    if not repo.has_commits():
        raise GitError(f"{source} has no commits yet. Commit something (git add -A && git commit) and run again.")
    return repo


def _open_local(source: str) -> Repository:
    path = Path(source).expanduser()
    if not path.is_dir():
        raise GitError(
            f"{source} does not exist or is not a directory. Point repo.source in mochi.yaml at a repository."
        )
    try:
        bare = _run_git(["rev-parse", "--is-bare-repository"], cwd=path).strip() == b"true"
        top = _run_git(["rev-parse", "--absolute-git-dir" if bare else "--show-toplevel"], cwd=path)
    except _CommandFailed:
        raise GitError(f"{source} is not a git repository; run `git init` or point repo.source at one.") from None
    top = Path(top.decode().strip())
    return Repository(top, source)


def _open_remote(url: str, cache_dir: Path, timeout_s: float, fetch: bool) -> Repository:
    validate_remote_url(url)
    key = content_hash(url)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Assets run in parallel processes: one clone/fetch of a given remote at a time.
    with file_lock(cache_dir / f".{key}.lock"):
        return _clone_or_fetch(url, cache_dir / key, timeout_s, fetch)


def _clone_or_fetch(url: str, target: Path, timeout_s: float, fetch: bool) -> Repository:
    if target.is_dir() and _is_git_dir(target):
        if not fetch:
            return Repository(target, url)
        try:
            _run_git(["fetch", "--quiet", "--prune", "--tags", "origin"], cwd=target, timeout=timeout_s)
        except _CommandFailed as err:
            raise GitError(
                f"Could not fetch {url} into {target}: {err.stderr}. Check the URL, network and credentials.",
                retryable=True,
            ) from None
        _follow_remote_head(target, timeout_s)
        return Repository(target, url)
    try:
        with atomic_directory(target) as tmp:
            _run_git(["clone", "--bare", "--quiet", "--", url, str(tmp)], timeout=timeout_s)
            # Keep branches as local heads so later fetches update them (a bare clone sets no refspec).
            _run_git(["config", "remote.origin.fetch", "+refs/heads/*:refs/heads/*"], cwd=tmp)
    except _CommandFailed as err:
        raise GitError(f"Could not clone {url}: {err.stderr}. Check the URL, network and credentials.",
                       retryable=True) from None
    return Repository(target, url)


def _follow_remote_head(clone: Path, timeout_s: float) -> None:
    """Point the clone's HEAD at the remote's default branch (it may have been renamed since cloning)."""
    out = _run_git(["ls-remote", "--symref", "origin", "HEAD"], cwd=clone, timeout=timeout_s).decode()
    for line in out.splitlines():
        if line.startswith("ref: ") and line.endswith("\tHEAD"):
            _run_git(["symbolic-ref", "HEAD", line[5:].split("\t")[0]], cwd=clone)


def _is_git_dir(path: Path) -> bool:
    try:
        _run_git(["rev-parse", "--git-dir"], cwd=path)
    except _CommandFailed:
        return False
    return True
