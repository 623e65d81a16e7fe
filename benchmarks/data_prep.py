"""Throughput of ingest -> clean (filters, scrubbing) -> chunk -> dedup against a bare tree-sitter parse of the
same files.

    .venv/bin/python benchmarks/data_prep.py REPO [--workers 2] [--exclude GLOB ...]

REPO is a git repository (read at HEAD through the ingestion layer) or a plain directory, or a git
work tree without commits: those are first copied into a temporary git repository (not timed), so
the same ingestion code reads them. The pipeline runs with a cold chunk cache, then once more warm.
The baseline is a single-core tree-sitter parse of the same files (those with a grammar), in the
same run; the ratio pipeline/baseline is printed (target: >= 0.5).
"""

from __future__ import annotations

import argparse
import os
import shutil
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
from mochi_pipeline.ingestion.source_loader import is_selected, load_source_files
from mochi_pipeline.preprocessing.cleaning import clean_files
from mochi_pipeline.preprocessing.code_chunker import chunk_files
from mochi_pipeline.preprocessing.deduplicator import deduplicate, signature_store
from mochi_pipeline.preprocessing.grammars import parser_for, supported_languages
from mochi_pipeline.preprocessing.settings import ChunkingSettings, DedupSettings, FilterSettings, ScrubSettings

DEFAULT_EXCLUDES = ["**/.git/**", "**/.venv/**", "**/__pycache__/**", "**/site-packages/**", "**/node_modules/**"]


def _git(repo: Path, *args: str) -> None:
    who = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com", "GIT_COMMITTER_NAME": "bench",
           "GIT_COMMITTER_EMAIL": "bench@example.com", "GIT_CONFIG_GLOBAL": os.devnull,
           "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+00:00", "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+00:00"}
    subprocess.run(["git", "-C", str(repo), *args], env={**os.environ, **who}, check=True, capture_output=True)


def _has_commits(path: Path) -> bool:
    done = subprocess.run(["git", "-C", str(path), "rev-parse", "--verify", "--quiet", "HEAD"],
                          capture_output=True, check=False)
    return done.returncode == 0 and (path / ".git").exists()


def _listed_files(src: Path, excludes: list[str]) -> list[Path]:
    if (src / ".git").exists():  # a work tree: what git would track (honours .gitignore)
        out = subprocess.run(["git", "-C", str(src), "ls-files", "-co", "--exclude-standard", "-z"],
                             capture_output=True, check=True).stdout.decode()
        rels = [r for r in out.split("\0") if r]
    else:
        rels = [str(p.relative_to(src)) for p in src.rglob("*") if p.is_file()]
    return [src / r for r in sorted(rels) if (src / r).is_file() and is_selected(r, ["**"], excludes)]


def _as_git_repo(src: Path, workdir: Path, excludes: list[str]) -> Path:
    repo = workdir / "repo"
    repo.mkdir()
    for path in _listed_files(src, excludes):
        target = repo / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "benchmark snapshot")
    return repo


def _pipeline(repo_path: Path, workdir: Path, cache: Path, workers: int, sources: SourceSettings) -> dict:
    marks = [("start", time.perf_counter())]
    repo = open_repository(str(repo_path), workdir / "clones")
    files, _ = load_source_files(repo, repo.resolve_rev("HEAD"), sources)
    marks.append(("ingest", time.perf_counter()))
    files, _ = clean_files(files, FilterSettings(), ScrubSettings(), cache / "clean", workers=workers)
    marks.append(("clean", time.perf_counter()))
    code = [f for f in files if f.language in supported_languages()]
    # As code_chunks and deduplicated_chunks do it: the chunking workers sign the chunks they cut.
    dedup = DedupSettings()
    chunks, stats = chunk_files(code, ChunkingSettings(), cache / "chunks", workers=workers, dedup=dedup)
    marks.append(("chunk", time.perf_counter()))
    store = signature_store(cache, dedup)
    store.add(stats.signatures)
    result = deduplicate(chunks, dedup, known=store.load(), workers=workers)
    store.save(result.signatures)
    marks.append(("dedup", time.perf_counter()))
    stages = ", ".join(f"{name} {t - marks[i][1]:.2f} s" for i, (name, t) in enumerate(marks[1:]))
    return {"seconds": marks[-1][1] - marks[0][1], "stages": stages, "files": code, "chunks": len(chunks),
            "kept": len(result.kept), "dropped": result.dropped, "cache_hits": stats.cache_hits}


def _bare_parse(files) -> float:
    sources = [(f.language, f.text.encode("utf-8")) for f in files]
    start = time.perf_counter()
    for language, data in sources:
        parser_for(language).parse(data)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("repo", type=Path)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--exclude", action="append", default=[], help="extra glob of files to leave out")
    args = ap.parse_args(argv)
    src = args.repo.resolve()
    if not src.is_dir():
        print(f"{src} is not a directory; pass a git repository or a folder of sources.", file=sys.stderr)
        return 2
    excludes = DEFAULT_EXCLUDES + args.exclude
    sources = SourceSettings(exclude=SourceSettings().exclude + excludes)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mochi-bench-") as tmp:
        workdir = Path(tmp)
        if _has_commits(src):
            repo_path, how = src, "git repository at HEAD"
        else:
            repo_path, how = _as_git_repo(src, workdir, excludes), "plain directory, copied into a temporary git repo"
        cold = _pipeline(repo_path, workdir, workdir / "cache", args.workers, sources)
        warm = _pipeline(repo_path, workdir, workdir / "cache", args.workers, sources)
        baseline = _bare_parse(cold["files"])
    mb = sum(len(f.text.encode("utf-8")) for f in cold["files"]) / 1e6
    if mb == 0:
        print(f"{src}: no files in a language with a grammar ({', '.join(supported_languages())}).",
              file=sys.stderr)
        return 2
    pipe_rate, warm_rate, base_rate = mb / cold["seconds"], mb / warm["seconds"], mb / baseline
    print(f"corpus: {src} ({how}); {len(cold['files'])} code files, {mb:.2f} MB")
    print(f"machine: {os.cpu_count()} cores, load average before the runs {load[0]:.1f} "
          "(other work on the cores slows the pool more than the single-core baseline)")
    print(f"chunks: {cold['chunks']}, kept after dedup: {cold['kept']}, dropped: {cold['dropped']}")
    print(f"pipeline ingest->clean->chunk->dedup, {args.workers} workers, cold cache: {cold['seconds']:.2f} s, "
          f"{pipe_rate:.2f} MB/s ({cold['stages']})")
    print(f"pipeline again, warm cache ({warm['cache_hits']} hits): {warm['seconds']:.2f} s, {warm_rate:.2f} MB/s "
          f"({warm['stages']})")
    print(f"baseline bare tree-sitter parse, 1 core: {baseline:.2f} s, {base_rate:.2f} MB/s")
    print(f"ratio pipeline/baseline (cold): {pipe_rate / base_rate:.2f} (target >= 0.5); "
          f"warm: {warm_rate / base_rate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
