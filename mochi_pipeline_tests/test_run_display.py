"""What a person sees during `mochi run`: a live display on a terminal (a real pseudo-terminal here), plain
lines in a file, a summary at the end, and no library noise in either."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from mochi_pipeline_tests.cli_runner import PROJECT_TRAINING, mochi

DATA_ONLY = ("run", "--select", "+deduplicated_chunks")
NOISE = ("Warning", "warn(", "it/s]", "examples/s]", "not a prefix", "Traceback")
# Cursor movements and line erases: a display redrawn in place.
REDRAW = re.compile(r"\x1b\[(\d*A|2K|\?25l)")


def run_in_pty(cwd: Path, *args: str, timeout: float = 900) -> tuple[int, str]:
    """`mochi *args` with a 160x60 pseudo-terminal as stdin, stdout and stderr; its exit code and output."""
    env = {k: v for k, v in os.environ.items() if k not in ("MOCHI_CONFIG", "DAGSTER_HOME")}
    env.update(TERM="xterm-256color", COLUMNS="160", LINES="60")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 160, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "mochi_pipeline.cli", *args], cwd=cwd, env=env,
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        else:
            proc.kill()
            raise AssertionError("mochi did not finish in time:\n" + b"".join(chunks).decode(errors="replace")[-3000:])
    finally:
        os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", errors="replace")


def plain_text(output: str) -> str:
    """The output without ANSI escape sequences."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)


@pytest.fixture
def repo(sample_repo, tmp_path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(sample_repo, copy)
    return copy


def test_a_terminal_gets_a_live_display_and_a_summary(repo):
    code, output = run_in_pty(repo, *DATA_ONLY)
    assert code == 0, output
    assert REDRAW.search(output), "the display is redrawn in place"
    text = plain_text(output)
    assert re.search(r"▸ +code_chunks +running", text)  # redrawn while the run goes, not only at its end
    assert re.search(r"✓ +code_chunks +done", text)
    summary = text[text.index("Summary: 4 built, 0 unchanged"):]
    for name in ("source_files", "clean_files", "code_chunks", "deduplicated_chunks"):
        assert re.search(rf"^  {name} +done +\d+s", summary, re.M), name
    # its key figure: the partitions (the sample's 8 directories holding code), summed
    assert re.search(r"code_chunks +done +\d+s +8 partitions \(8 rebuilt\), 12 files, \d+ chunks", summary)
    assert re.search(r"Full log[^:]*: \S+run-", summary) and "Done. Artifacts under" in summary
    assert not any(noise in text for noise in NOISE)


def test_a_file_gets_plain_lines_with_the_same_information(repo):
    proc = mochi(repo, *DATA_ONLY)
    assert "\r" not in proc.stdout + proc.stderr and "\x1b[" not in proc.stdout
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert "  running  code_chunks" in lines
    assert any(re.fullmatch(r"  done     code_chunks  \(8 partitions \(8 rebuilt\), 12 files, \d+ chunks\)  \d+s",
                            line) for line in lines)
    summary = proc.stdout[proc.stdout.index("Summary: 4 built"):]
    assert re.search(r"^  deduplicated_chunks +done +\d+s +\d+ kept", summary, re.M)
    log = Path(re.search(r"Full log[^:]*: (\S+)", summary).group(1))
    assert log.is_file() and "code_chunks" in log.read_text()  # the steps' own log lines are kept there


def write_training_config(repo: Path) -> None:
    (repo / ".gitignore").write_text(".mochi/\n")
    (repo / "mochi.yaml").write_text(yaml.safe_dump({
        "generation": {"eval_time_share": 0.3},
        "training": {**PROJECT_TRAINING, "logging_steps": 2, "eval_max_examples": 8},
        "export": {"quantizations": ["q8_0"]},
    }))


@pytest.mark.slow
def test_a_whole_run_on_a_terminal_shows_training_bars_then_the_summary(repo):
    write_training_config(repo)
    code, output = run_in_pty(repo, "run")
    assert code == 0, plain_text(output)[-3000:]
    text = plain_text(output)
    assert REDRAW.search(output)
    assert re.search(r"▸ +fine_tuned_adapter +running", text)
    assert re.search(r"fine-tuning: step \d/8, loss [\d.]+", text)  # the bar's figures while it trains
    assert "ETA " in text  # ...with the time left
    assert re.search(r"scoring the fine-tuned model: example \d+/\d+", text)
    summary = text[text.rindex("Summary: "):]
    assert re.search(r"fine_tuned_adapter +done +\S+ +8 steps, train loss [\d.]+ -> [\d.]+", summary)
    assert re.search(r"evaluation_report +done +\S+ +perplexity base [\d.]+ -> fine-tuned [\d.]+, accepted", summary)
    assert re.search(r"gguf_model +done +\S+ +q8_0 [\d.]+ MiB", summary)
    assert not any(noise in text for noise in NOISE)


@pytest.mark.slow
def test_a_whole_run_to_a_file_has_no_bars_and_no_library_warnings(repo):
    write_training_config(repo)
    proc = mochi(repo, "run")
    out = proc.stdout
    assert "\r" not in out + proc.stderr and "\x1b[" not in out
    assert proc.stderr == ""
    assert not any(noise in out for noise in NOISE)
    assert re.search(r"^ +fine_tuned_adapter  fine-tuning: step 8/8, .*loss [\d.]+", out, re.M)
    assert re.search(r"^  done     fine_tuned_adapter  \(8 steps, train loss", out, re.M)
    assert re.search(r"^  done     gguf_model  \(q8_0 [\d.]+ MiB\)", out, re.M)
    summary = out[out.index("Summary: "):]
    assert re.search(r"^  training_dataset +done +\d+s +\d+ train / \d+ eval examples", summary, re.M)
    log = Path(re.search(r"Full log[^:]*: (\S+)", summary).group(1)).read_text()
    # Fixed at our calls, not filtered: they are not in the full log either.
    assert "not a prefix" not in log  # TRL's seam warning (the trainer gets ids split on a token boundary)
    assert "gradient_checkpointing` is deprecated" not in log and "pin_memory" not in log
    assert "Token indices sequence length" not in log
    assert "fine-tuning: step 8/8" in log  # the steps' own lines, in full

    # The Dagster UI shows the same progress: the run's log has the pre-training/fine-tuning step lines.
    run_id = re.search(r"run-([0-9a-f-]+)\.log", summary).group(1)
    with dg.DagsterInstance.from_config(str(repo / ".mochi" / "dagster_home")) as instance:
        messages = [e.user_message for e in instance.all_logs(run_id)]
    assert any(re.match(r"fine-tuning: step 8/8: .*loss [\d.]+", m) for m in messages)
    assert any(m.startswith("scoring the fine-tuned model: example") for m in messages)
