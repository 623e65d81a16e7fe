"""Open a git repository (a local one in place, a remote one as a cached bare clone) and read it through GitPython.

Every git process GitPython starts here (its persistent ``cat-file --batch`` included) runs with
``GIT_ALLOW_PROTOCOL`` limited to ``ALLOWED_SCHEMES``, no terminal prompt and ``core.quotepath=false``;
cloning and fetching keep GitPython's unsafe-protocol and unsafe-option guards on, behind mochi's own
URL policy (``git_urls``). Bulk work uses one process per pass, never one per file: blobs come from
GitPython's persistent ``cat-file --batch``, history from one streamed ``git log`` (``git_history``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import git
from git.exc import (
    GitCommandError,
    GitCommandNotFound,
    InvalidGitRepositoryError,
    NoSuchPathError,
    UnsafeOptionError,
    UnsafeProtocolError,
)

from mochi_pipeline.ingestion.git_history import (
    changed_paths_args,
    history_args,
    log_records,
    parse_changed_paths,
    parse_commit,
)
from mochi_pipeline.ingestion.git_urls import ALLOWED_SCHEMES, GitError, is_remote_source, url_fix, validate_remote_url
from mochi_pipeline.records import Commit
from mochi_pipeline.storage import atomic_directory, content_hash, file_lock

# Never wait for a password on a terminal; refuse dangerous protocols even in submodules and redirects.
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ALLOW_PROTOCOL": ":".join(ALLOWED_SCHEMES)}
GIT_CONFIG = ("protocol.ext.allow=never", "core.quotepath=false")
# Branches a remote clone keeps as its own heads, so every branch is there to read and later fetches update them.
CLONE_REFSPEC = "+refs/heads/*:refs/heads/*"
_NAMES_IN_MESSAGES = 20  # at most this many branch/tag names in an error message
# Blob requests written to cat-file before their answers are read: 41-byte lines, far below a pipe's 64 KiB,
# so the write never waits on git (which may itself wait for its answers to be read).
_BLOB_WINDOW = 256


class _SafeGit(git.Git):
    """GitPython's command runner with mochi's environment and config on every command it starts."""

    def __init__(self, working_dir: str | os.PathLike | None = None) -> None:
        super().__init__(working_dir)
        self.update_environment(**GIT_ENV)
        self.set_persistent_git_options(c=list(GIT_CONFIG))


class _SafeRepo(git.Repo):
    GitCommandWrapperType = _SafeGit


class _CommandFailed(GitError):
    """A git command that exited non-zero (callers turn the expected ones into a worded ``GitError``)."""


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


@dataclass(frozen=True)
class Ref:
    """A branch or tag and the commit it points at (an annotated tag peeled to its commit)."""

    name: str  # short name: "main", "v1.0"
    kind: str  # "branch" or "tag"
    sha: str
    date: str  # ISO-8601 committer date of that commit


def tags_by_commit(refs: Iterable[Ref]) -> dict[str, list[str]]:
    """Commit SHA -> names of the tags among ``refs`` pointing at it, sorted."""
    tags: dict[str, list[str]] = {}
    for ref in refs:
        if ref.kind == "tag":
            tags.setdefault(ref.sha, []).append(ref.name)
    return {sha: sorted(names) for sha, names in tags.items()}


def _run(repo_git: git.Git, command: str, *args: str, timeout: float | None = None) -> bytes:
    """stdout of ``git <command> <args>``; a failure raises ``_CommandFailed`` (a missing git: ``GitError``)."""
    try:
        code, out, err = getattr(repo_git, command)(
            *args, with_extended_output=True, with_exceptions=False, stdout_as_string=False,
            strip_newline_in_stdout=False, kill_after_timeout=timeout,
        )
    except GitCommandNotFound:
        raise GitError("The `git` command was not found. Install git and make sure it is on PATH.") from None
    if code != 0:
        name = command.replace("_", "-")
        if timeout is not None and "did not complete in" in err:  # GitPython killed it
            raise GitError(f"`git {name}` did not finish within {timeout:.0f} s. "
                           "Check the network, or raise repo.git_timeout_s in mochi.yaml.", retryable=True)
        raise _CommandFailed(f"`git {name} {' '.join(args)}` failed with exit code {code}: {err.strip()}")
    return out


class Repository:
    """A git repository to read from: ``path`` is a work tree's top level or a bare repository.

    Holds GitPython's persistent ``cat-file`` process once a blob is read: ``close()`` (or ``with``) ends it.
    """

    def __init__(self, repo: git.Repo, source: str) -> None:
        self._repo = repo
        self.source = source
        self.path = Path(repo.working_tree_dir or repo.git_dir).resolve()

    def close(self) -> None:
        self._repo.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _git(self, command: str, *args: str) -> bytes:
        return _run(self._repo.git, command, *args)

    # --- revisions and refs ----------------------------------------------------------------

    def resolve_rev(self, rev: str) -> str:
        """Full commit SHA of a branch, tag, or (abbreviated) commit."""
        if not rev or rev.startswith("-") or any(ch.isspace() for ch in rev):
            raise GitError(f"repo.rev = {rev!r} is not a valid revision. Use a branch, tag or commit SHA.")
        try:
            out = self._git("rev_parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
        except _CommandFailed:
            names = [r.name for r in self.refs()]
            known = f"Known branches and tags: {', '.join(names[:_NAMES_IN_MESSAGES])}." if names else (
                "It has no branches or tags.")
            raise GitError(
                f"Unknown revision {rev!r} in {self.source}. {known} "
                "Set repo.rev in mochi.yaml to one of them or to a commit SHA."
            ) from None
        return out.decode().strip()

    def refs(self) -> list[Ref]:
        """Branches (local, and a work tree's remote-tracking ones such as ``origin/stable``), then tags, by name,
        each with the commit it points at (one ``for-each-ref``)."""
        fields = ("refname", "objecttype", "objectname", "committerdate:iso-strict")
        fmt = "%00".join([f"%({f})" for f in fields] + [f"%(*{f})" for f in fields[1:]])
        out = self._git("for_each_ref", f"--format={fmt}", "refs/heads", "refs/remotes", "refs/tags")
        refs = []
        for line in out.decode("utf-8", "replace").splitlines():
            name, kind, sha, date, peeled_kind, peeled_sha, peeled_date = line.split("\0")
            if kind == "tag":  # annotated: the commit it tags
                kind, sha, date = peeled_kind, peeled_sha, peeled_date
            if kind != "commit" or name.endswith("/HEAD"):  # a tag of a tree, blob or tag; origin/HEAD (an alias)
                continue
            short = name.removeprefix("refs/heads/").removeprefix("refs/remotes/").removeprefix("refs/tags/")
            refs.append(Ref(short, "tag" if name.startswith("refs/tags/") else "branch", sha, date))
        return sorted(refs, key=lambda r: (r.kind != "branch", r.name))

    def branch_heads(self, names: Sequence[str], setting: str = "repo.branches") -> dict[str, str]:
        """``branch -> commit SHA`` for each of ``names``; an unknown one is an error naming ``setting``."""
        known = {r.name: r.sha for r in self.refs() if r.kind == "branch"}
        unknown = [n for n in names if n not in known]
        if unknown:
            listed = ", ".join(sorted(known)[:_NAMES_IN_MESSAGES]) or "none"
            raise GitError(
                f"{setting} names {', '.join(map(repr, unknown))}, not a branch of {self.source}. "
                f"Known branches: {listed}. Fix {setting} in mochi.yaml."
            )
        return {n: known[n] for n in names}

    def has_commits(self) -> bool:
        return bool(self._git("rev_list", "-n", "1", "--all").strip())

    def has_commit(self, sha: str) -> bool:
        try:
            self._git("cat_file", "-e", f"{sha}^{{commit}}")
        except _CommandFailed:
            return False
        return True

    def all_reachable(self, commits: Iterable[str], heads: Iterable[str]) -> bool:
        """True when every commit reachable from ``commits`` is reachable from one of ``heads`` (one ``rev-list``);
        False too when one of ``commits`` is gone (history rewritten)."""
        try:
            outside = self._git("rev_list", "-n", "1", *commits, *(f"^{h}" for h in heads), "--")
        except _CommandFailed:
            return False
        return not outside.strip()

    # --- files -----------------------------------------------------------------------------

    def list_files(self, rev: str) -> list[TreeEntry]:
        """Tracked files at ``rev``, and submodules (listed, never fetched): path, object SHA, size and mode."""
        sha = self.resolve_rev(rev)
        entries = []
        for record in self._git("ls_tree", "-r", "-l", "-z", "--full-tree", sha).split(b"\0"):
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
        return self.read_blobs([sha])[sha]

    def read_blobs(self, shas: Iterable[str]) -> dict[str, bytes]:
        """Contents of many blobs from GitPython's one persistent ``git cat-file --batch`` process.

        That is the process behind GitPython's ``stream_object_data``; requests go to it a window at a
        time rather than one round trip per object (benchmarks/ingestion.py, 2,000 files: 0.23 s -> 0.16 s),
        and every answer is read back, so it stays in step for GitPython's own later calls.
        """
        wanted = list(dict.fromkeys(shas))
        bad = [s for s in wanted if not s or any(ch.isspace() for ch in s)]
        if bad:
            raise GitError(f"{bad[0]!r} is not an object name.")
        cat_file = self._repo.git._get_persistent_cmd("cat_file_all", "cat_file", batch=True)
        blobs: dict[str, bytes] = {}
        missing: list[str] = []
        for start in range(0, len(wanted), _BLOB_WINDOW):
            window = wanted[start : start + _BLOB_WINDOW]
            cat_file.stdin.write("".join(f"{sha}\n" for sha in window).encode())
            cat_file.stdin.flush()
            for sha in window:
                header = cat_file.stdout.readline().split()  # "<sha> <type> <size>", or "<name> missing"
                if len(header) != 3:
                    missing.append(sha)
                    continue
                blobs[sha] = cat_file.stdout.read(int(header[2]))
                cat_file.stdout.read(1)  # the newline after the content
        if missing:
            raise GitError(f"Object {missing[0]} is missing from {self.source}; the clone may be damaged (delete it).")
        return blobs

    def last_commits(self, rev: str, paths: Iterable[str]) -> dict[str, tuple[str, str]]:
        """``path -> (commit SHA, ISO committer date)`` of the newest commit touching it, in one log pass."""
        wanted = set(paths)
        found: dict[str, tuple[str, str]] = {}
        if not wanted:
            return found
        with log_records(self._repo, changed_paths_args(self.resolve_rev(rev))) as records:
            for record in records:
                sha, date, names = parse_changed_paths(record)
                for name in names:
                    if name in wanted and name not in found:
                        found[name] = (sha, date)
                if len(found) == len(wanted):
                    break
        return found

    # --- history ---------------------------------------------------------------------------

    def iter_commits(self, revs: str | Sequence[str], max_count: int, max_diff_bytes: int = 200_000,
                     since: str | Sequence[str] = ()) -> Iterator[Commit]:
        """Commits reachable from ``revs`` (each once) and not from ``since``, newest first, with tags, per-file
        status, line counts and diffs.

        Merges keep all parents and carry their diff against the first parent. A file diff longer
        than ``max_diff_bytes`` keeps its line counts but an empty ``diff``.
        """
        if max_count <= 0:
            return
        revs = [revs] if isinstance(revs, str) else list(revs)
        since = [since] if isinstance(since, str) else list(since)
        args = history_args([self.resolve_rev(r) for r in revs], max_count, [self.resolve_rev(s) for s in since])
        tags = tags_by_commit(self.refs())
        with log_records(self._repo, args) as records:
            for record in records:
                try:
                    yield parse_commit(record, max_diff_bytes, tags)
                except (ValueError, IndexError) as err:
                    raise GitError(
                        f"Could not read commit {record[:40].decode('utf-8', 'replace')} of {self.source} ({err}). "
                        "Lower repo.max_commits to skip it, and report the repository layout that caused it."
                    ) from None


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
        return Repository(_SafeRepo(path, search_parent_directories=True), source)
    except (InvalidGitRepositoryError, NoSuchPathError):
        raise GitError(f"{source} is not a git repository; run `git init` or point repo.source at one.") from None


def _open_remote(url: str, cache_dir: Path, timeout_s: float, fetch: bool) -> Repository:
    validate_remote_url(url)
    key = content_hash(url)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Assets run in parallel processes: one clone/fetch of a given remote at a time.
    with file_lock(cache_dir / f".{key}.lock"):
        return _clone_or_fetch(url, cache_dir / key, timeout_s, fetch)


def _existing_clone(path: Path) -> git.Repo | None:
    try:
        return _SafeRepo(path) if path.is_dir() else None
    except (InvalidGitRepositoryError, NoSuchPathError):
        return None


def _clone_or_fetch(url: str, target: Path, timeout_s: float, fetch: bool) -> Repository:
    clone = _existing_clone(target)
    if clone is not None:
        if fetch:
            _fetch(clone, url, timeout_s, "fetch")
        return Repository(clone, url)
    try:
        with atomic_directory(target) as tmp:
            # A bare clone made as init + fetch: GitPython's clone_from has no timeout, its fetch does.
            with _SafeRepo.init(tmp, expand_vars=False, bare=True) as new:
                new.create_remote("origin", url)  # GitPython's unsafe-protocol guard checks the URL
                with new.remotes.origin.config_writer as config:
                    config.set_value("fetch", CLONE_REFSPEC)
                _fetch(new, url, timeout_s, "clone")
    except (UnsafeProtocolError, UnsafeOptionError) as err:
        raise GitError(f"Refusing repository URL {url!r}: GitPython's {type(err).__name__} guard refused it. "
                       f"{url_fix()}") from None
    return Repository(_SafeRepo(target), url)


def _fetch(repo: git.Repo, url: str, timeout_s: float, action: str) -> None:
    """Fetch every branch and tag of origin (pruning what it deleted), then follow its default branch."""
    try:
        repo.remotes.origin.fetch(prune=True, tags=True, kill_after_timeout=timeout_s)
    except GitCommandError as err:
        stderr = str(err.stderr).removeprefix("\n  stderr: '").removesuffix("'").strip()
        if "kill_after_timeout=" in stderr:  # GitPython killed it
            raise GitError(f"Could not {action} {url} within {timeout_s:.0f} s. Check the network, or raise "
                           "repo.git_timeout_s in mochi.yaml.", retryable=True) from None
        raise GitError(f"Could not {action} {url}: {stderr.rstrip('.')}. Check the URL, network and credentials.",
                       retryable=True) from None
    _follow_remote_head(repo, timeout_s)


def _follow_remote_head(repo: git.Repo, timeout_s: float) -> None:
    """Point the clone's HEAD at the remote's default branch (it may have been renamed since cloning)."""
    out = _run(repo.git, "ls_remote", "--symref", "origin", "HEAD", timeout=timeout_s).decode()
    lines = out.splitlines()
    target = next((ln[5:].split("\t")[0] for ln in lines if ln.startswith("ref: ") and ln.endswith("\tHEAD")), None)
    if target is None:  # a server that does not name it: the branch at HEAD's commit, as `git clone` guesses
        head = next((ln.split("\t")[0] for ln in lines if ln.endswith("\tHEAD")), None)
        branches = sorted((r.sha, r.name not in ("main", "master"), r.name)
                          for r in Repository(repo, "").refs() if r.kind == "branch")
        target = next((f"refs/heads/{name}" for sha, _, name in branches if sha == head), None)
    if target is not None:
        _run(repo.git, "symbolic_ref", "HEAD", target)
