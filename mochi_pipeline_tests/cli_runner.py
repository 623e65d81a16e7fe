"""The `mochi` command as a user runs it: a subprocess in a real repository, for every test that needs one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def mochi(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MOCHI_CONFIG", "DAGSTER_HOME")}
    proc = subprocess.run([sys.executable, "-m", "mochi_pipeline.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"mochi {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def status_of(cwd: Path) -> dict[str, str]:
    out = mochi(cwd, "status").stdout
    return {parts[1]: parts[0] for line in out.splitlines() if len(parts := line.split()) == 2}
