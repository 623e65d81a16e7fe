"""The `mochi` command as a user runs it: a subprocess in a real repository, for every test that needs one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg

from mochi_pipeline_tests.training.store_project import TINY_BASE

# `training:` of a test project's mochi.yaml: a full fine-tune, since on the 20-step test base a few LoRA steps move
# held-out perplexity too little for a quality gate to tell from noise (the LoRA path has its own tests). Every
# step's loss is logged, so training_loss_decreased compares the first step with the last.
PROJECT_TRAINING = {**TINY_BASE, "method": "full", "learning_rate": 3e-3, "max_steps": 8,
                    "logging_steps": 1, "eval_steps": 4, "save_steps": 4, "max_seq_length": 128, "batch_size": 4,
                    "eval_max_examples": 16}


def mochi(cwd: Path, *args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MOCHI_CONFIG", "DAGSTER_HOME")}
    proc = subprocess.run([sys.executable, "-m", "mochi_pipeline.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"mochi {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def status_of(cwd: Path) -> dict[str, str]:
    """Asset -> FRESH, STALE or MISSING, as `mochi status` prints them ("  FRESH    code_chunks (8 partitions)")."""
    out = mochi(cwd, "status").stdout
    return {m[2]: m[1] for line in out.splitlines() if (m := re.match(r"  (FRESH|STALE|MISSING) +(\S+)", line))}


def check_results(repo: Path) -> dict[str, bool]:
    """Whether each asset check passed at its latest evaluation (``asset:check``), from the CLI's run history."""
    home = repo / ".mochi" / "dagster_home"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION), ascending=True)
        evaluations = [r.event_log_entry.dagster_event.event_specific_data for r in records]
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed for e in evaluations}
