"""After a one-file commit, the data assets (ingestion → training_dataset) against a full build, same run.

    .venv/bin/python benchmarks/incremental.py REPO [--file PATH]

REPO (a git repository) is cloned into a temporary directory. The data assets are built once
from cold caches through `mochi run --select …` (in this process, so imports are not timed),
then one code file gets a new function in a new commit and the same command runs again: what
reads the change is recomputed, what found its inputs unchanged is reused. Printed: both times,
what each step did, and the ratio incremental/full (target: <= 0.05).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/secrets.py would hide the standard library's `secrets` (numpy imports it): this folder
# comes off the import path before anything imports numpy.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import yaml

CODE_SUFFIXES = (".py", ".go", ".js", ".ts", ".java", ".rs", ".c", ".cpp")
NEW_FUNCTION = '''

def mochi_benchmark_helper(values, factor=2):
    """Scale every value (added by benchmarks/incremental.py)."""
    return [value * factor for value in values]
'''


def _git(repo: Path, *args: str) -> str:
    who = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com", "GIT_COMMITTER_NAME": "bench",
           "GIT_COMMITTER_EMAIL": "bench@example.com", "GIT_CONFIG_GLOBAL": os.devnull}
    return subprocess.run(["git", "-C", str(repo), *args], env={**os.environ, **who}, check=True,
                          capture_output=True, text=True).stdout.strip()


def _pick_file(repo: Path) -> str:
    """A mid-sized code file of the repository (the median by size)."""
    files = [p for p in _git(repo, "ls-files").splitlines() if p.endswith(CODE_SUFFIXES)]
    if not files:
        raise SystemExit(f"{repo} has no code file to change.")
    files.sort(key=lambda p: (repo / p).stat().st_size)
    return files[len(files) // 2]


def _data_assets(config: Path) -> list[str]:
    """The assets of the data layers (ingestion -> training_dataset), from the code location itself."""
    from mochi_pipeline.automation import DATA_GROUPS
    from mochi_pipeline.config import load_config
    from mochi_pipeline.definitions import build_defs

    graph = build_defs(load_config(config)).resolve_asset_graph()
    return [k.to_user_string() for k in graph.toposorted_asset_keys
            if graph.get(k).is_materializable and graph.get(k).group_name in DATA_GROUPS]


def _run(config: Path) -> tuple[float, str]:
    from mochi_pipeline.cli import main

    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["--config", str(config), "run", "--select", *_data_assets(config)])
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"mochi run failed ({code}):\n{out.getvalue()[-3000:]}")
    return seconds, out.getvalue()


def _step_report(config: Path) -> str:
    """Per asset of the last run: its step's seconds, and whether it was recomputed or reused."""
    import dagster as dg

    from mochi_pipeline.config import load_config

    cfg = load_config(config)
    with dg.DagsterInstance.from_config(str(cfg.artifacts_path / "dagster_home")) as instance:
        names = _data_assets(config)
        run_id = instance.get_latest_materialization_event(dg.AssetKey(names[-1])).run_id
        seconds = {e.step_key: e.dagster_event.event_specific_data.duration_ms / 1000
                   for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)}
        rows = []
        for name in names:
            metadata = instance.get_latest_materialization_event(dg.AssetKey(name)).asset_materialization.metadata
            how = "reused" if "reused_from_run" in metadata else "recomputed"
            if "rechunked_partitions" in metadata:  # code_chunks: the run's partitions, some of them reused
                how = (f"recomputed {len(metadata['rechunked_partitions'].value)} of "
                       f"{metadata['partitions_in_run'].value} partitions")
            rows.append(f"  {name:20} {seconds.get(name, float('nan')):6.2f} s  {how}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("repo", type=Path)
    ap.add_argument("--file", help="the file to change (default: the median-sized code file)")
    args = ap.parse_args(argv)
    os.environ.pop("DAGSTER_HOME", None)
    with tempfile.TemporaryDirectory(prefix="mochi-incremental-") as tmp:
        repo = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(args.repo.resolve()), str(repo)], check=True)
        (repo / ".git" / "info" / "exclude").write_text(".mochi/\n")
        config = Path(tmp) / "mochi.yaml"
        config.write_text(yaml.safe_dump({"repo": {"source": str(repo)}, "artifacts_root": str(Path(tmp) / "art")}))

        full, _ = _run(config)
        full_steps = _step_report(config)
        path = args.file or _pick_file(repo)
        with (repo / path).open("a", encoding="utf-8") as fh:
            fh.write(NEW_FUNCTION)
        _git(repo, "commit", "-qam", f"Add a helper to {path}")
        incremental, _ = _run(config)
        steps = _step_report(config)
    print(f"repository: {args.repo} ({_git(args.repo, 'rev-list', '--count', 'HEAD')} commits); changed: {path}")
    print(f"full build of the data assets, cold caches: {full:.2f} s\n{full_steps}")
    print(f"after a one-file commit, one run: {incremental:.2f} s\n{steps}")
    print(f"ratio incremental/full: {incremental / full:.3f} (target <= 0.05)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
