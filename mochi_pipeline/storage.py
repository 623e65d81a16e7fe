"""Atomic writes: every artifact appears whole or not at all (temp file/dir + rename).

The temporary file or directory gets the permissions a plain ``open``/``mkdir`` would give under
the process umask (``mkstemp``/``mkdtemp`` make them private), so a server or a teammate running
as another user can read what mochi wrote.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path


@functools.cache
def umask() -> int:
    """The process umask, read without changing it (os.umask can only be read by setting it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` whole or not at all; ``fsync=False`` for caches (a lost entry is recomputed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


_RENAME_EXCHANGE = 2  # linux/fs.h


@functools.cache
def _renameat2():
    """libc's ``renameat2`` (Linux), or None where there is none."""
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return func


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (``RENAME_EXCHANGE``); False where the OS or file system cannot."""
    func = _renameat2()
    if func is None:
        return False
    at_fdcwd = -100
    if func(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it takes the place of ``path`` in one step.

    An existing ``path`` is swapped with the new one atomically (``renameat2``): a reader in another process
    finds the old directory or the new one, never none. (Where the OS cannot swap, two renames leave ``path``
    missing for an instant.) A crash leaves the previous ``path`` (if any) untouched and only a ``.tmp``
    sibling behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        tmp.chmod(0o777 & ~umask())
        yield tmp
        if not path.exists():
            os.replace(tmp, path)
        elif exchange(tmp, path):
            shutil.rmtree(tmp, ignore_errors=True)  # now the old directory
        else:
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build_once(dest: str | os.PathLike, complete: Callable[[Path], bool], build: Callable[[Path], None]) -> Path:
    """``dest``, made by ``build(folder)`` into a temporary folder unless ``complete(dest)`` already holds.

    A cache entry two processes may want at once (two ``mochi`` commands, two test sessions): one builds under
    a lock while the others wait, then find it complete; a complete entry is never replaced under a reader.
    """
    dest = Path(dest)
    if complete(dest):
        return dest
    with file_lock(dest.with_name(dest.name + ".lock")):
        if not complete(dest):  # not finished by another process while this one waited
            with atomic_directory(dest) as tmp:
                build(tmp)
    return dest


def content_hash(*parts: str | bytes) -> str:
    """Stable short hash of some content, used for data versions and cache keys."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8") if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def build_key(sources: Iterable[str | os.PathLike], *settings: object) -> str:
    """Cache key of a build: the source files of the code that makes it and the settings it is made with.

    Any edit to that code or any other setting gives another key, so a cached build is never one made by
    older code (no version number to remember to bump).
    """
    return content_hash(*(Path(s).read_bytes() for s in sources), *(repr(s) for s in settings))


def file_sha256(path: str | os.PathLike) -> str:
    """Full sha256 of a (possibly large) file, read in blocks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive lock held across processes (parallel Dagster steps, concurrent runs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
