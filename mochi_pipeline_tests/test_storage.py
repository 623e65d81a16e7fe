"""Atomic writes: whole or nothing, and readable by others as a plain write under the umask would be."""

from __future__ import annotations

import multiprocessing
import os
import stat

import pytest

from mochi_pipeline import storage
from mochi_pipeline.io_manager import write_asset_file
from mochi_pipeline.preprocessing.chunk_cache import ChunkCache
from mochi_pipeline.records import Chunk


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    previous = os.umask(request.param)
    storage.umask.cache_clear()
    yield request.param
    os.umask(previous)
    storage.umask.cache_clear()


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_and_directories_get_the_permissions_of_a_plain_write(tmp_path, umask):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    (tmp_path / "plain_dir").mkdir()
    written = storage.atomic_write_text(tmp_path / "a.txt", "x")
    with storage.atomic_directory(tmp_path / "model") as folder:
        (folder / "weights").write_text("w")
    chunk = Chunk(id="1", path="a.py", language="python", kind="file", start_line=1, end_line=1, text="x", n_tokens=1)
    stored = write_asset_file(tmp_path / "assets" / "code_chunks", [chunk])
    ChunkCache(tmp_path / "cache").put("ab12", {"mode": "ast"})
    assert mode(written) == mode(plain) == mode(stored) == 0o666 & ~umask
    assert mode(next((tmp_path / "cache").rglob("*.json"))) == 0o666 & ~umask
    assert mode(tmp_path / "model") == mode(tmp_path / "plain_dir") == 0o777 & ~umask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = storage.atomic_write_text(tmp_path / "a.txt", "old")

    with pytest.raises(TypeError):
        storage.atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]

    with pytest.raises(RuntimeError), storage.atomic_directory(tmp_path / "dir") as folder:
        (folder / "half").write_text("x")
        raise RuntimeError("killed")
    assert not (tmp_path / "dir").exists() and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_build_key_changes_with_the_code_and_with_each_setting(tmp_path):
    code = tmp_path / "builder.py"
    code.write_text("STEPS = 20\n")
    key = storage.build_key([code], "template", 20)
    assert key == storage.build_key([code], "template", 20)  # stable: a warm cache is found again
    assert key != storage.build_key([code], "template", 21)
    assert key != storage.build_key([code], "template ", 20)
    code.write_text("STEPS = 20  # an edit anywhere in the code\n")
    assert key != storage.build_key([code], "template", 20)


def _look_while_replaced(folder: str, ready, stop, misses) -> None:
    """Another process: look for ``folder/version`` until told to stop, counting the times it was not there."""
    ready.set()
    while not stop.is_set():
        if not os.path.exists(os.path.join(folder, "version")):
            misses.value += 1


def test_a_replaced_directory_is_never_missing_for_a_reader_in_another_process(tmp_path):
    """A run's final folder or a cached model replaced while another process reads it: the reader finds the old
    folder or the new one, never none (the two renames this replaced left the path missing for an instant, and
    this reader saw it missing some 20 times in 400 replacements)."""
    ctx = multiprocessing.get_context("spawn")
    ready, stop, misses = ctx.Event(), ctx.Event(), ctx.Value("i", 0)
    with storage.atomic_directory(tmp_path / "final") as folder:
        (folder / "version").write_text("0")
    reader = ctx.Process(target=_look_while_replaced, args=(str(tmp_path / "final"), ready, stop, misses))
    reader.start()
    try:
        assert ready.wait(60)
        for version in range(1, 400):
            with storage.atomic_directory(tmp_path / "final") as folder:
                (folder / "version").write_text(str(version))
    finally:
        stop.set()
        reader.join(30)
    assert misses.value == 0
    assert (tmp_path / "final" / "version").read_text() == "399"
    assert [p.name for p in tmp_path.iterdir()] == ["final"]  # no old or temporary folder left behind
