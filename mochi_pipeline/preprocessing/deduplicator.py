"""Remove exact and near-duplicate chunks, keeping one deterministic representative per cluster.

Exact duplicates share the hash of their whitespace-normalised text. Near duplicates are found
with datasketch MinHash signatures (``update_batch``) over word n-gram shingles and LSH banding
with the bands and rows datasketch's MinHashLSH would choose (``DedupSettings``: n, permutations, Jaccard threshold),
computed on the whole signature matrix at once; LSH candidates are confirmed with the signatures'
estimated Jaccard, then joined by union-find, so a cluster is closed under "near duplicate of a member".

The representative of a cluster is the chunk from the oldest file (last-commit date; the
original, usually), then the shortest path, then the path, then the earliest line: the same input
set always keeps the same chunk, whatever its order. A chunk with fewer than n words is shingled
with n = its word count; a chunk with no words at all can only be an exact duplicate.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from datasketch import MinHash

from mochi_pipeline.preprocessing.parallel import process_pool
from mochi_pipeline.preprocessing.settings import DedupSettings
from mochi_pipeline.records import Chunk

WORD_RE = re.compile(r"\w+")
# affine32 pre-mixes every input hash with a murmur finalizer, so the fast crc32 is a sound input
# hash here (sha1, datasketch's default, costs 5x more and changes nothing for dedup).
SCHEME = "affine32"
PARALLEL_MIN_BYTES = 1_000_000
# Texts go to workers in batches, about 4 per worker, 64 to 2000 texts each.
BATCH_TEXTS = 2000
MIN_BATCH_TEXTS = 64

# An LSH bucket larger than this is checked against its first member only (keeps it linear).
MAX_FULL_BUCKET = 64

DROP_EXACT = "exact"
DROP_NEAR = "near"


def normalized_hash(text: str) -> str:
    """Hash of the text with every whitespace run collapsed (the exact-duplicate key)."""
    return hashlib.blake2b(" ".join(text.split()).encode("utf-8"), digest_size=16).hexdigest()


def shingles(text: str, n: int) -> list[bytes]:
    """Word n-grams of ``text``; a text shorter than n words gives one shingle of all its words."""
    words = WORD_RE.findall(text)
    k = min(n, len(words))
    if k == 0:
        return []
    return [" ".join(words[i:i + k]).encode("utf-8") for i in range(len(words) - k + 1)]


def _template(settings: DedupSettings) -> MinHash:
    return MinHash(num_perm=settings.num_perm, seed=settings.seed, hashfunc=zlib.crc32, scheme=SCHEME)


def _signature_batch(texts: list[str], settings: DedupSettings) -> list[np.ndarray | None]:
    # One MinHash, cleared per text: building one per text (its permutations) costs as much as hashing.
    minhash = _template(settings)
    out: list[np.ndarray | None] = []
    for text in texts:
        items = shingles(text, settings.ngram)
        if not items:
            out.append(None)
            continue
        minhash.clear()
        minhash.update_batch(items)
        out.append(minhash.hashvalues.copy())
    return out


def signatures(texts: list[str], settings: DedupSettings, workers: int = 2,
               parallel_min_bytes: int = PARALLEL_MIN_BYTES) -> list[np.ndarray | None]:
    """MinHash signatures (None for a text without words), in ``workers`` processes for large inputs."""
    size = max(MIN_BATCH_TEXTS, min(BATCH_TEXTS, -(-len(texts) // (4 * workers))))
    batches = [texts[i:i + size] for i in range(0, len(texts), size)]
    if workers > 1 and len(batches) > 1 and sum(map(len, texts)) >= parallel_min_bytes:
        with process_pool(workers) as pool:
            parts = list(pool.map(_signature_batch, batches, [settings] * len(batches)))
    else:
        parts = [_signature_batch(b, settings) for b in batches]
    return [sig for part in parts for sig in part]


@cache
def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) minimising false positives + false negatives at ``threshold``.

    The same choice datasketch's MinHashLSH makes (equal weights), integrated on a grid with numpy
    for all (b, r) at once instead of with scipy quadrature one pair at a time (~0.4 s per run).
    """
    pairs = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)], dtype=float)
    s = np.linspace(0.0, 1.0, 1001)
    below, above = s <= threshold, s >= threshold
    p = 1.0 - (1.0 - s[None, :] ** pairs[:, 1:2]) ** pairs[:, 0:1]  # P(candidate) at similarity s
    error = 0.5 * np.trapezoid(p[:, below], s[below], axis=1) + 0.5 * np.trapezoid(1.0 - p[:, above], s[above], axis=1)
    b, r = pairs[int(np.argmin(error))]
    return int(b), int(r)


def candidate_pairs(sigs: list[np.ndarray | None], settings: DedupSettings) -> set[tuple[int, int]]:
    """Index pairs (i < j) whose signatures agree on a whole LSH band.

    The banding is datasketch MinHashLSH's (same bands and rows), done on the signature matrix with
    numpy: inserting and querying chunks one by one costs more than parsing them.
    """
    rows = [i for i, sig in enumerate(sigs) if sig is not None]
    if len(rows) < 2:
        return set()
    matrix = np.stack([sigs[i] for i in rows])
    bands, r = lsh_bands(settings.threshold, settings.num_perm)
    pairs: set[tuple[int, int]] = set()
    for band in range(bands):
        block = np.ascontiguousarray(matrix[:, band * r:(band + 1) * r])
        keys = block.view(np.dtype((np.void, block.dtype.itemsize * r))).ravel()
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        shared = np.flatnonzero(counts[inverse] > 1)
        if shared.size == 0:
            continue
        order = shared[np.argsort(inverse[shared], kind="stable")]
        groups = np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1)
        for group in groups:
            members = [rows[i] for i in group]
            if len(members) > MAX_FULL_BUCKET:  # boilerplate: pair each with the first, not all with all
                pairs.update((members[0], b) for b in members[1:])
            else:
                pairs.update((a, b) for n, a in enumerate(members) for b in members[n + 1:])
    return pairs


def representative_key(chunk: Chunk) -> tuple:
    # Chunks without a date sort after dated ones ("~" > any digit).
    return (chunk.file_date or "~", len(chunk.path), chunk.path, chunk.start_line, chunk.id)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class DedupResult:
    kept: list[Chunk]
    dropped: dict[str, int]  # reason -> count
    clusters: list[list[str]] = field(default_factory=list)  # chunk ids, representative first (size >= 2)
    representative_of: dict[str, str] = field(default_factory=dict)  # dropped id -> kept id

    @property
    def total(self) -> int:
        return len(self.kept) + sum(self.dropped.values())

    @property
    def dedup_rate(self) -> float:
        return sum(self.dropped.values()) / self.total if self.total else 0.0

    def cluster_size_histogram(self) -> dict[int, int]:
        return dict(sorted(Counter(len(c) for c in self.clusters).items()))


def deduplicate(chunks: list[Chunk], settings: DedupSettings, workers: int = 2) -> DedupResult:
    """Keep one chunk per exact/near-duplicate cluster; kept chunks stay in input order."""
    groups: dict[str, list[int]] = {}
    for i, chunk in enumerate(chunks):
        groups.setdefault(normalized_hash(chunk.text), []).append(i)
    # One candidate per exact group (its representative) goes on to near-duplicate search.
    heads = [min(members, key=lambda i: representative_key(chunks[i])) for members in groups.values()]
    members_of = dict(zip(heads, groups.values(), strict=True))

    sigs = signatures([chunks[i].text for i in heads], settings, workers)
    uf = _UnionFind(len(heads))
    for k, other in candidate_pairs(sigs, settings):
        if float(np.mean(sigs[k] == sigs[other])) >= settings.threshold:
            uf.union(k, other)

    near: dict[int, list[int]] = {}
    for k in range(len(heads)):
        near.setdefault(uf.find(k), []).append(heads[k])
    dropped = {DROP_EXACT: 0, DROP_NEAR: 0}
    drop: set[int] = set()
    clusters: list[list[str]] = []
    representative_of: dict[str, str] = {}
    for near_heads in near.values():
        rep = min(near_heads, key=lambda i: representative_key(chunks[i]))
        cluster = [rep]
        for head in sorted(near_heads, key=lambda i: representative_key(chunks[i])):
            for i in sorted(members_of[head], key=lambda i: representative_key(chunks[i])):
                if i == rep:
                    continue
                cluster.append(i)
                drop.add(i)
                dropped[DROP_EXACT if i != head else DROP_NEAR] += 1
                representative_of[chunks[i].id] = chunks[rep].id
        if len(cluster) > 1:
            clusters.append([chunks[i].id for i in cluster])
    clusters.sort(key=lambda ids: ids[0])
    kept = [c for i, c in enumerate(chunks) if i not in drop]
    return DedupResult(kept, dropped, clusters, representative_of)
