"""Exact and near-duplicate removal with real MinHash LSH, on unit inputs and on the sample repository."""

from __future__ import annotations

import random

import numpy as np
from datasketch import MinHash, MinHashLSH

from mochi_pipeline.ingestion.git_connector import open_repository
from mochi_pipeline.ingestion.settings import SourceSettings
from mochi_pipeline.ingestion.source_loader import load_source_files
from mochi_pipeline.preprocessing.code_chunker import chunk_files
from mochi_pipeline.preprocessing.deduplicator import deduplicate, signed_texts
from mochi_pipeline.preprocessing.minhash import WORDS, lsh_bands, permutations, shingle_hashes
from mochi_pipeline.preprocessing.settings import ChunkingSettings, DedupSettings
from mochi_pipeline.records import Chunk

BODY = ("def parse_options(argv):\n    parser = make_parser(prog='tool', description='does things')\n"
        "    parser.add_argument('--verbose', action='store_true', help='say more')\n"
        "    parser.add_argument('--output', default='out.txt', help='where to write')\n"
        "    return parser.parse_args(argv)\n")


def _chunk(text: str, path: str, line: int = 1, date: str = "2024-01-01") -> Chunk:
    return Chunk(id=f"{path}:{line}", path=path, language="python", kind="function", start_line=line,
                 end_line=line + text.count("\n"), text=text, n_tokens=len(text.split()), file_date=date)


def test_exact_and_near_duplicates_are_dropped_with_reasons():
    chunks = [
        _chunk(BODY, "b/tool.py", date="2024-03-01"),
        _chunk(BODY.replace("    ", "\t"), "a/copy.py", date="2024-02-01"),  # whitespace differs only: exact
        _chunk(BODY.replace("parse_options", "parse_opts"), "c/near.py", date="2024-01-01"),  # near
        _chunk("def unrelated():\n    return sum(range(10)) * 42\n", "d/other.py"),
    ]
    result = deduplicate(chunks, DedupSettings())
    assert result.dropped == {"exact": 1, "near": 1}
    # The oldest file is the representative of the whole cluster.
    assert [c.path for c in result.kept] == ["c/near.py", "d/other.py"]
    assert result.clusters == [["c/near.py:1", "a/copy.py:1", "b/tool.py:1"]]
    assert result.cluster_size_histogram() == {3: 1}
    assert result.representative_of == {"a/copy.py:1": "c/near.py:1", "b/tool.py:1": "c/near.py:1"}
    assert round(result.dedup_rate, 2) == 0.5


def test_representative_does_not_depend_on_input_order():
    chunks = [_chunk(BODY, p, line) for p, line in [("pkg/zz.py", 3), ("pkg/a.py", 9), ("pkg/a.py", 2), ("x.py", 5)]]
    picks = set()
    for seed in range(5):
        shuffled = chunks[:]
        random.Random(seed).shuffle(shuffled)
        (kept,) = deduplicate(shuffled, DedupSettings()).kept
        picks.add((kept.path, kept.start_line))
    assert picks == {("x.py", 5)}  # same date: shortest path wins


def test_short_and_wordless_chunks_never_crash():
    assert shingle_hashes(["a", "b"], 5).size == 1  # a text shorter than n is one shingle of all its words
    assert shingle_hashes([], 5).size == 0
    chunks = [_chunk("x", "a.py"), _chunk("x", "b.py"), _chunk("};", "c.py"), _chunk("};", "d.py", 4),
              _chunk("y = 1", "e.py")]
    result = deduplicate(chunks, DedupSettings())
    assert [c.path for c in result.kept] == ["a.py", "c.py", "e.py"]
    assert result.dropped == {"exact": 2, "near": 0}
    assert signed_texts(["};"], DedupSettings()) == [(None, 0)]


def test_unrelated_chunks_are_all_kept():
    chunks = [_chunk(f"def f{i}(a, b):\n    return a ** {i} - b * {i * 7} + helper_{i}(a)\n", f"m{i}.py")
              for i in range(40)]
    result = deduplicate(chunks, DedupSettings(threshold=0.9))
    assert len(result.kept) == 40 and result.clusters == []


def test_sample_repo_clamp_is_exact_and_load_settings_near(sample_repo, tmp_path):
    """At HEAD~1 pkg/dup.py copies clamp() exactly and load_settings() with one name changed."""
    repo = open_repository(str(sample_repo), tmp_path / "clones")
    files, _ = load_source_files(repo, repo.resolve_rev("HEAD~1"), SourceSettings())
    code = [f for f in files if f.language == "python"]
    chunks, _ = chunk_files(code, ChunkingSettings(), workers=1)
    result = deduplicate(chunks, DedupSettings())
    by_id = {c.id: c for c in chunks}
    named = {tuple(sorted((by_id[i].path, by_id[i].symbol) for i in ids)) for ids in result.clusters}
    assert (("pkg/dup.py", "clamp"), ("pkg/util.py", "clamp")) in named
    assert (("pkg/dup.py", "load_settings_file"), ("pkg/util.py", "load_settings")) in named
    assert result.dropped["exact"] >= 1 and result.dropped["near"] >= 1
    reps = {by_id[ids[0]].symbol: by_id[ids[0]].path for ids in result.clusters}
    # Same last-commit date: the shorter path is kept.
    assert reps["clamp"] == "pkg/dup.py"
    assert reps["load_settings_file"] == "pkg/dup.py"

    # At HEAD clamp() in util.py gained a check: it is no longer a duplicate of any kind.
    files, _ = load_source_files(repo, repo.resolve_rev("HEAD"), SourceSettings())
    chunks, _ = chunk_files([f for f in files if f.language == "python"], ChunkingSettings(), workers=1)
    clusters = deduplicate(chunks, DedupSettings()).clusters
    by_id = {c.id: c for c in chunks}
    assert not any("clamp" in {by_id[i].symbol for i in ids} for ids in clusters)


def test_lsh_bands_are_the_ones_datasketch_chooses():
    for threshold, num_perm in [(0.7, 256), (0.9, 128), (0.5, 64)]:
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        assert lsh_bands(threshold, num_perm) == (lsh.b, lsh.r)


def test_signatures_are_datasketch_minhash_over_the_same_shingles():
    settings = DedupSettings()
    ((ours, _),) = signed_texts([BODY], settings, workers=1)
    theirs = MinHash(num_perm=settings.num_perm, seed=settings.seed, hashfunc=int, scheme="affine32")
    theirs.update_batch(shingle_hashes(WORDS.findall(BODY), settings.ngram).tolist())
    assert np.array_equal(ours, theirs.hashvalues.astype(np.uint32))
    assert np.array_equal(permutations(settings.num_perm, settings.seed)[0], theirs.permutations[0])
