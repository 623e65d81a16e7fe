"""Recall and leaks of the scrubber on a repository full of planted secrets, and what it touches in real code.

    .venv/bin/python benchmarks/secrets.py [--rounds 20] [--clean-files 300] [--seed N] [--fp-repo PATH ...]

1. Recall and leaks. Builds a git repository of code (modules of Python's standard library, as they are) and
   plants secrets and personal data of every type (fresh random values; ``mochi_pipeline_tests/planted_secrets.py``)
   in code, config, docs, commit messages and diffs, ``--rounds`` times. Then runs mochi's data assets
   (`mochi run --select …`, in this process) and reports recall (planted values gone from what mochi learns from:
   clean_files and clean_commits) and leaks (planted values found in any final training artifact: dataset
   splits, generator outputs, Q&A cache). Targets: 0 leaks, recall >= 0.98.
2. What the detector finds in real, unfiltered code: every text file of each ``--fp-repo`` (default: this
   repository) at HEAD, scanned as `clean_files` scans it (with its path). Reported per detector (findings, files),
   with the share of files changed and the lines behind the noisiest detectors, partly masked, so a noisy rule can
   be seen and fixed. Not all of it is noise: an author's e-mail address in a header is personal data, rightly
   replaced. Target: < 2% of files changed by a secret rule (personal data aside).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

# This file's name hides the standard library's `secrets` (numpy imports it): its folder comes off the
# path before anything that imports numpy (all imports below are inside main).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

PERSONAL = {"email", "ip_address", "phone"}
OFFENDERS = 3  # lines shown per detector


def clean_corpus(limit: int) -> dict[str, str]:
    """Standard-library modules, unfiltered (tests and bundled packages aside)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if {"test", "tests", "site-packages", "idlelib", "__pycache__"} & set(rel.parts):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if len(text) < 200_000:
            out[f"clean/{rel.as_posix()}"] = text
        if len(out) >= limit:
            break
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20, help="how many sets of planted values (each of every type)")
    ap.add_argument("--clean-files", type=int, default=300)
    ap.add_argument("--seed", type=int, default=None, help="fix the planted values (default: fresh each run)")
    ap.add_argument("--fp-repo", action="append", help="a git checkout whose HEAD is scanned for what the detector "
                    "finds in real code (repeatable; default: this repository)")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)

    import yaml

    from mochi_pipeline.cli import main as mochi
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
        if not (assets / "training_dataset.json").is_file():  # exit 2 with a dataset is the leak check failing
            print(f"the data assets failed (exit {code}); run with a smaller --rounds to see why", file=sys.stderr)
            return 1
        learnt = (assets / "clean_files.jsonl").read_text() + (assets / "clean_commits.jsonl").read_text()
        generated = {f"{name}.jsonl" for name in ("completion_pairs", "doc_code_pairs", "commit_pairs", "qa_pairs")}
        final = [p for p in art.rglob("*") if p.is_file() and ("dataset" in p.parts or "qa" in p.parts
                                                                or p.name in generated)]
        final_text = "".join(p.read_bytes().decode("utf-8", "replace") for p in final)

    values = {p.value for p in planted}
    missed = sorted({p.type for p in planted if p.value in learnt})
    leaks = sorted({p.type for p in planted if p.value in final_text})
    removed = sum(1 for v in values if v not in learnt)
    print(f"planted: {len(values)} values of {len({p.type for p in planted})} types, {args.rounds} rounds, in code, "
          f"config, docs, commit messages and diffs, beside {len(clean)} standard-library files; data assets built "
          f"in {seconds:.1f} s")
    missed_note = f"; missed types: {', '.join(missed)}" if missed else ""
    print(f"recall: {removed / len(values):.4f} (target >= 0.98){missed_note}")
    print(f"leaks into final training artifacts: {len(leaks)} types ({', '.join(leaks) or 'none'}) (target 0)")
    for fp_repo in args.fp_repo or [str(Path(__file__).resolve().parent.parent)]:
        real_code_findings(Path(fp_repo))
    return 0


def real_code_findings(repo: Path) -> None:
    """Per detector: findings and files in every text file of ``repo`` at HEAD, and the lines behind them."""
    import subprocess
    from collections import Counter, defaultdict

    from mochi_pipeline.preprocessing.scrubber import Scrubber
    from mochi_pipeline.preprocessing.settings import ScrubSettings

    scrubber = Scrubber(ScrubSettings())
    paths = subprocess.run(["git", "-C", str(repo), "ls-files", "-z"], capture_output=True, check=True,
                           text=True).stdout.split("\0")
    findings: Counter = Counter()
    files: dict[str, set[str]] = defaultdict(set)
    lines: dict[str, list[str]] = defaultdict(list)
    scanned = 0
    for rel in filter(None, paths):
        path = repo / rel
        try:
            raw = path.read_bytes()
        except OSError:
            continue
        if b"\0" in raw[:8192] or len(raw) > 1_000_000:
            continue  # binary or huge: skipped at ingestion too
        text = raw.decode("utf-8", "replace")
        scanned += 1
        for f in scrubber.find(text, rel):
            findings[f.type] += 1
            files[f.type].add(rel)
            if len(lines[f.type]) < OFFENDERS:
                line_no = text.count("\n", 0, f.start) + 1
                value = text[f.start:f.end]
                masked = value[:4] + "…" if len(value) > 6 else "…"
                lines[f.type].append(f"{rel}:{line_no} {masked}")
    secret_files = set().union(*(files[t] for t in files if t not in PERSONAL)) if files else set()
    personal_files = set().union(*(files[t] for t in files if t in PERSONAL)) if files else set()
    print(f"\nreal code: {repo} ({scanned} text files at HEAD, unfiltered)")
    print(f"  files changed by a secret rule: {len(secret_files)} = {len(secret_files) / max(1, scanned):.2%} "
          f"(target < 2%); by a personal-data rule: {len(personal_files)} = "
          f"{len(personal_files) / max(1, scanned):.2%}")
    for kind, n in findings.most_common():
        print(f"  {kind:20} {n:5} finding(s) in {len(files[kind]):4} file(s): {'; '.join(lines[kind])}")


if __name__ == "__main__":
    sys.exit(main())
