"""Source loading speed: batched git reads vs one git process per file (same run, same repository).

    .venv/bin/python benchmarks/ingestion.py [n_files] [n_commits]

Builds a repository with ``n_files`` Python files changed over ``n_commits`` commits, then times
``load_source_files`` (one ``ls-tree``, ``cat-file --batch`` and ``git log`` pass) against the
naive baseline (``git cat-file blob`` and ``git log -1 -- path`` per file), and prints the ratio.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/secrets.py would hide the standard library's `secrets` (numpy imports it): this folder
# comes off the import path before anything imports numpy.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from mochi_pipeline.ingestion.git_connector import open_repository
from mochi_pipeline.ingestion.settings import SourceSettings
from mochi_pipeline.ingestion.source_loader import load_source_files
from mochi_pipeline_tests.repo_factory import commit, git


def build_repo(root: Path, n_files: int, n_commits: int) -> Path:
    repo = root / "bench"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for c in range(n_commits):
        changed = {
            f"pkg/mod_{i:04d}.py": f'"""Module {i}."""\n\nVALUE = {c}\n' + "def f(x):\n    return x + 1\n" * 20
            for i in range(n_files) if c == 0 or i % n_commits == c
        }
        commit(repo, f"Change {c}", f"2024-01-{1 + c % 28:02d}T00:00:00+00:00", changed)
    return repo


def naive_load(repo: Path) -> list[tuple[str, str, str]]:
    listing = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "HEAD"], capture_output=True, text=True,
                             check=True).stdout
    out = []
    for line in listing.splitlines():
        meta, path = line.split("\t", 1)
        blob = meta.split()[2]
        text = subprocess.run(["git", "-C", str(repo), "cat-file", "blob", blob], capture_output=True,
                              check=True).stdout.decode()
        last = subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%H %cI", "--", path],
                              capture_output=True, text=True, check=True).stdout.split()
        out.append((path, text, last[0]))
    return out


def main() -> None:
    n_files = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    n_commits = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    with tempfile.TemporaryDirectory() as tmp:
        repo_dir = build_repo(Path(tmp), n_files, n_commits)
        repo = open_repository(str(repo_dir), Path(tmp) / "cache")

        start = time.perf_counter()
        files, _ = load_source_files(repo, "HEAD", SourceSettings())
        batched = time.perf_counter() - start

        start = time.perf_counter()
        baseline = naive_load(repo_dir)
        naive = time.perf_counter() - start

    assert [(f.path, f.text, f.last_commit_sha) for f in files] == baseline, "both methods must agree"
    print(f"files={len(files)} commits={n_commits}")
    print(f"batched: {batched:.3f} s   one process per file: {naive:.3f} s   speed-up: {naive / batched:.1f}x")


if __name__ == "__main__":
    main()
