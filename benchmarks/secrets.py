"""Recall and leaks of the scrubber on a repository full of planted secrets, and what it costs clean code.

    .venv/bin/python benchmarks/secrets.py [--rounds 20] [--clean-files 300] [--seed N]

Builds a git repository of clean code (modules of Python's standard library with no e-mail address
or IP address in them) and plants secrets and personal data of every type (fresh random values;
``mochi_pipeline_tests/planted_secrets.py``) in code, config, docs, commit messages and diffs,
``--rounds`` times. Then runs mochi's data assets (`mochi run --select …`, in this process) and
reports: recall (planted values that are gone from what mochi learns from: clean_files and
clean_commits), leaks (planted values found in any final training artifact: dataset splits,
generator outputs, Q&A cache), and the share of the clean files' chunks the scrubber changed.
Targets: 0 leaks, recall >= 0.98, < 2% of clean chunks changed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import re
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

# This file's name hides the standard library's `secrets` (numpy imports it): its folder comes off the
# path before anything that imports numpy (all imports below are inside main).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

_PII_LIKE = re.compile(r"@\w|\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b")


def clean_corpus(limit: int) -> dict[str, str]:
    """Standard-library modules without anything that looks like an address: code that holds no personal data."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if {"test", "tests", "site-packages", "idlelib", "__pycache__"} & set(rel.parts):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if not _PII_LIKE.search(text) and len(text) < 200_000:
            out[f"clean/{rel.as_posix()}"] = text
        if len(out) >= limit:
            break
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20, help="how many sets of planted values (each of every type)")
    ap.add_argument("--clean-files", type=int, default=300)
    ap.add_argument("--seed", type=int, default=None, help="fix the planted values (default: fresh each run)")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)

    import yaml

    from mochi_pipeline.cli import main as mochi
    from mochi_pipeline.io_manager import read_asset_file
    from mochi_pipeline_tests.materialize import DATA_ASSETS
    from mochi_pipeline_tests.planted_secrets import plant
    from mochi_pipeline_tests.repo_factory import commit, git

    with tempfile.TemporaryDirectory(prefix="mochi-secrets-") as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        clean = clean_corpus(args.clean_files)
        commit(repo, "Add the clean code", "2024-01-01T10:00:00+00:00", clean)
        planted = []
        for n in range(args.rounds):
            planted += plant(repo, rng, f"2024-02-{1 + n % 27:02d}T10:00:00+00:00", prefix=f"service{n}/")
        config = Path(tmp) / "mochi.yaml"
        art = Path(tmp) / "art"
        config.write_text(yaml.safe_dump({"repo": {"source": str(repo)}, "artifacts_root": str(art)}))
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = mochi(["--config", str(config), "run", "--select", *DATA_ASSETS])
        seconds = time.perf_counter() - started

        assets = art / "assets"
        learnt = (assets / "clean_files.jsonl").read_text() + (assets / "clean_commits.jsonl").read_text()
        generated = {f"{name}.jsonl" for name in ("completion_pairs", "doc_code_pairs", "commit_pairs", "qa_pairs")}
        final = [p for p in art.rglob("*") if p.is_file() and ("dataset" in p.parts or "qa" in p.parts
                                                                or p.name in generated)]
        final_text = "".join(p.read_bytes().decode("utf-8", "replace") for p in final)
        chunks = [c for part in sorted((assets / "code_chunks").glob("*.jsonl"))  # one file per directory
                  for c in read_asset_file(part) if c.path.startswith("clean/")]

    if code != 0:
        print("the data assets failed; run with a smaller --rounds to see why", file=sys.stderr)
        return 1
    values = {p.value for p in planted}
    missed = sorted({p.type for p in planted if p.value in learnt})
    leaks = sorted({p.type for p in planted if p.value in final_text})
    removed = sum(1 for v in values if v not in learnt)
    changed = sum(1 for c in chunks if re.search(r"<(?:SECRET:\w+|EMAIL|IP_ADDRESS|PHONE)>", c.text))
    print(f"planted: {len(values)} values of {len({p.type for p in planted})} types, {args.rounds} rounds, in code, "
          "config, docs, commit messages and diffs; clean corpus: "
          f"{len(clean)} files, {len(chunks)} chunks; data assets built in {seconds:.1f} s")
    missed_note = f"; missed types: {', '.join(missed)}" if missed else ""
    print(f"recall: {removed / len(values):.4f} (target >= 0.98){missed_note}")
    print(f"leaks into final training artifacts: {len(leaks)} types ({', '.join(leaks) or 'none'}) (target 0)")
    print(f"clean chunks changed: {changed} of {len(chunks)} = {changed / max(1, len(chunks)):.2%} (target < 2%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
