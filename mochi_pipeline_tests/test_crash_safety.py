"""A `mochi run` killed with SIGKILL (a real signal to the real process) leaves nothing half-written, and the
next run resumes: training from its last checkpoint, everything else by redoing the step."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from mochi_pipeline.io_manager import read_asset_file
from mochi_pipeline_tests.cli_runner import mochi
from mochi_pipeline_tests.repo_factory import commit
from mochi_pipeline_tests.training.store_project import TINY_BASE

pytestmark = pytest.mark.slow


def start(repo: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("MOCHI_CONFIG", "DAGSTER_HOME")}
    log = repo.parent / "run.log"
    proc = subprocess.Popen([sys.executable, "-m", "mochi_pipeline.cli", "run", *args], cwd=repo, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    proc.log = log  # read when the run ends before it can be killed
    return proc


def kill_when(proc: subprocess.Popen, seen, timeout: float = 300, poll: float = 0.02) -> None:
    """SIGKILL ``proc`` as soon as ``seen()`` is true (fails if the run ends first)."""
    deadline = time.monotonic() + timeout
    while not seen():
        if proc.poll() is not None:
            tail = proc.log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"the run ended ({proc.returncode}) before the moment to kill it:\n{tail}")
        assert time.monotonic() < deadline, "the moment to kill the run never came"
        time.sleep(poll)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def visible_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                  p.relative_to(root).parts)]


def assert_nothing_half_written(art: Path) -> None:
    """Every artifact a reader can see is whole: stored assets parse, GGUF files start with their magic."""
    for path in visible_files(art / "assets"):
        read_asset_file(path)
    for path in (art / "gguf").rglob("*.gguf") if (art / "gguf").exists() else []:
        if not path.name.startswith("."):
            assert path.read_bytes()[:4] == b"GGUF", path


@pytest.fixture
def repo(sample_repo, tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(sample_repo, copy)
    (copy / ".gitignore").write_text(".mochi/\n")
    return copy


def test_killed_while_chunking(repo):
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = {f"lib/{p.name}": p.read_text(encoding="utf-8", errors="replace") for p in sorted(stdlib.glob("*.py"))}
    commit(repo, "Vendor a lot of code to chunk", "2024-06-01T10:00:00+00:00", files)
    art = repo / ".mochi"
    select = ["--select", "source_files", "clean_files", "code_chunks"]
    proc = start(repo, *select)
    kill_when(proc, lambda: any((art / "cache" / "chunks").glob("*/*.json")))
    assert not (art / "assets" / "code_chunks" / "lib.jsonl").exists()
    assert_nothing_half_written(art)
    for entry in (art / "cache" / "chunks").glob("*/*.json"):  # cache entries are whole too
        assert entry.read_bytes().startswith(b"{")

    out = mochi(repo, "run", *select).stdout
    assert "Done" in out
    chunks = read_asset_file(art / "assets" / "code_chunks" / "lib.jsonl")
    assert {c.path for c in chunks} >= {f"lib/{p}" for p in ("os.py", "ast.py")}
    with dg.DagsterInstance.from_config(str(art / "dagster_home")) as instance:
        statuses = {r.status for r in instance.get_runs()}
    assert dg.DagsterRunStatus.STARTED not in statuses  # the killed run is marked failed, with the reason


def test_killed_while_training_then_merging_then_exporting(repo):
    (repo / "mochi.yaml").write_text(yaml.safe_dump({
        "generation": {"eval_time_share": 0.3},
        "training": {**TINY_BASE, "method": "full", "learning_rate": 3e-3,
                     "max_steps": 40, "save_steps": 5, "eval_steps": 5, "max_seq_length": 128, "batch_size": 4,
                     "eval_max_examples": 8, "early_stopping_patience": 0},
        "export": {"quantizations": ["f16", "q8_0"]},
    }))
    art = repo / ".mochi"
    runs = art / "training" / "runs"
    proc = start(repo)
    kill_when(proc, lambda: any(runs.glob("*/checkpoints/checkpoint-5/trainer_state.json")))
    assert not list(runs.glob("*/final")) and not (art / "assets" / "fine_tuned_adapter.json").exists()
    assert_nothing_half_written(art)

    # Second run: training resumes from its checkpoint; killed while the merged model is being saved.
    proc = start(repo)
    kill_when(proc, lambda: any((art / "training").glob(".merged.*.tmp/*")), poll=0.002)
    assert not (art / "training" / "merged").exists() and not (art / "assets" / "merged_model.json").exists()
    assert_nothing_half_written(art)
    adapter = read_asset_file(art / "assets" / "fine_tuned_adapter.json")
    with dg.DagsterInstance.from_config(str(art / "dagster_home")) as instance:
        resumed = instance.get_latest_materialization_event(dg.AssetKey("fine_tuned_adapter"))
        assert "checkpoint-" in resumed.asset_materialization.metadata["resumed_from"].value
    assert adapter.global_step == 40

    # Third run: the merge is redone whole; killed while a GGUF file is being written.
    proc = start(repo)
    kill_when(proc, lambda: any((art / "gguf" / "model").glob(".*.tmp.gguf")) if (art / "gguf").exists()
              else False)
    assert_nothing_half_written(art)
    assert (art / "training" / "merged" / "config.json").exists()

    # Fourth run: what was done stays done; the export is redone, whole.
    out = mochi(repo, "run").stdout
    assert "fine_tuned_adapter" not in out.split("Materializing", 1)[1].split("\n", 1)[0]
    gguf = read_asset_file(art / "assets" / "gguf_model.json")
    assert {f.quantization for f in gguf.files} == {"f16", "q8_0"}
    assert_nothing_half_written(art)


def test_a_checkpoint_cut_short_is_not_resumed_from(tmp_path):
    from mochi_pipeline.training.trainer import last_complete_checkpoint

    for step, state in ((5, "{}"), (10, '{"glob'), (15, None)):  # whole, truncated state, no state yet
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-5"]
    assert last_complete_checkpoint(tmp_path / "none") is None


def test_ctrl_c_stops_a_run_with_a_sentence_and_the_next_run_finishes_it(repo):
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = {f"lib/{p.name}": p.read_text(encoding="utf-8", errors="replace") for p in sorted(stdlib.glob("*.py"))}
    commit(repo, "Vendor a lot of code to chunk", "2024-06-01T10:00:00+00:00", files)
    art = repo / ".mochi"
    select = ["--select", "source_files", "clean_files", "code_chunks"]
    proc = start(repo, *select)
    deadline = time.monotonic() + 300
    while not any((art / "cache" / "chunks").glob("*/*.json")):  # mid-chunking, as a person presses Ctrl-C
        assert proc.poll() is None, proc.log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=120)
    out = proc.log.read_text(errors="replace")
    assert code == 130, out[-3000:]
    assert "Interrupted; finished work is kept and the next run resumes from it." in out
    assert "The run failed" not in out
    assert not (art / "assets" / "code_chunks" / "lib.jsonl").exists()
    assert_nothing_half_written(art)
    assert "code_chunks" in mochi(repo, "run", *select).stdout
    assert (art / "assets" / "code_chunks" / "lib.jsonl").is_file()
