"""Remove exact and near-duplicate chunks, keeping one deterministic representative per cluster.

Exact duplicates share the hash of their whitespace-normalised text. Near duplicates are found
with MinHash signatures over word n-gram shingles (``minhash``: datasketch's affine32 MinHash,
vectorised) and LSH banding with the bands and rows datasketch's MinHashLSH would choose
(``DedupSettings``: n, permutations, Jaccard threshold); LSH candidates are confirmed with the
signatures' estimated Jaccard, then joined by union-find, so a cluster is closed under "near
duplicate of a member". Signatures already known (computed by the chunking workers, kept in a
``SignatureStore``) are not computed again. The LSH index lives in memory or, for large corpora, in
Redis (``dedup.lsh_storage``, see ``lsh_index``): the same chunks are kept either way.

The representative of a cluster is the chunk from the oldest file (last-commit date; the
original, usually), then the shortest path, then the path, then the earliest line: the same input
set always keeps the same chunk, whatever its order. A chunk with fewer than n words is shingled
with n = its word count; a chunk with no words at all can only be an exact duplicate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from mochi_pipeline.preprocessing import minhash
from mochi_pipeline.preprocessing.lsh_index import LSHIndex, open_index
from mochi_pipeline.preprocessing.minhash import text_key
from mochi_pipeline.preprocessing.parallel import shared_pool
from mochi_pipeline.preprocessing.settings import DedupSettings
from mochi_pipeline.records import Chunk

PARALLEL_MIN_BYTES = 1_000_000
# Texts go to workers in batches, about 4 per worker, 64 to 2000 texts each.
BATCH_TEXTS = 2000
MIN_BATCH_TEXTS = 64

DROP_EXACT = "exact"
DROP_NEAR = "near"


Signed = tuple[np.ndarray | None, int]  # a text's MinHash signature (None without words) and word count


def chunk_signed(texts: list[str], settings: DedupSettings) -> list[Signed]:
    """The MinHash signatures deduplication compares texts by, with their word counts."""
    return minhash.signed(texts, settings.ngram, settings.num_perm, settings.seed)


def signature_store(root, settings: DedupSettings) -> minhash.SignatureStore:
    return minhash.SignatureStore(root, "chunks", settings.ngram, settings.num_perm, settings.seed)


def signed_texts(texts: list[str], settings: DedupSettings, workers: int = 2,
                 parallel_min_bytes: int = PARALLEL_MIN_BYTES) -> list[Signed]:
    """``chunk_signed`` for many texts, in ``workers`` processes for large inputs."""
    size = max(MIN_BATCH_TEXTS, min(BATCH_TEXTS, -(-len(texts) // (4 * workers))))
    batches = [texts[i:i + size] for i in range(0, len(texts), size)]
    if workers > 1 and len(batches) > 1 and sum(map(len, texts)) >= parallel_min_bytes:
        parts = list(shared_pool(workers).map(chunk_signed, batches, [settings] * len(batches)))
    else:
        parts = [chunk_signed(b, settings) for b in batches]
    return [sig for part in parts for sig in part]


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
    signatures: dict[str, Signed] = field(default_factory=dict)  # text key -> signed text, of the compared texts

    @property
    def total(self) -> int:
        return len(self.kept) + sum(self.dropped.values())

    @property
    def dedup_rate(self) -> float:
        return sum(self.dropped.values()) / self.total if self.total else 0.0

    def cluster_size_histogram(self) -> dict[int, int]:
        return dict(sorted(Counter(len(c) for c in self.clusters).items()))


def deduplicate(chunks: list[Chunk], settings: DedupSettings, known: Mapping[str, Signed] | None = None,
                workers: int = 2) -> DedupResult:
    """Keep one chunk per exact/near-duplicate cluster; kept chunks stay in input order.

    ``known`` holds signatures by text key already computed; the others are computed here.
    """
    # Redis first (``dedup.lsh_storage: redis``): unreachable, it fails before any signature is computed.
    with open_index(settings) as index:
        return _deduplicate(chunks, settings, known or {}, workers, index)


def _deduplicate(chunks: list[Chunk], settings: DedupSettings, known: Mapping[str, Signed], workers: int,
                 index: LSHIndex) -> DedupResult:
    groups: dict[str, list[int]] = {}
    for i, chunk in enumerate(chunks):
        groups.setdefault(text_key(chunk.text), []).append(i)
    # One candidate per exact group (its representative) goes on to near-duplicate search.
    keys = list(groups)
    heads = [min(groups[k], key=lambda i: representative_key(chunks[i])) for k in keys]
    members_of = dict(zip(heads, groups.values(), strict=True))

    missing = [n for n, k in enumerate(keys) if k not in known]
    computed = dict(zip(missing, signed_texts([chunks[heads[n]].text for n in missing], settings, workers),
                        strict=True))
    entries = [computed[n] if n in computed else known[k] for n, k in enumerate(keys)]
    sigs = [sig for sig, _ in entries]
    with_words = [n for n, sig in enumerate(sigs) if sig is not None]
    uf = _UnionFind(len(heads))
    for a, b in index.near_pairs([keys[n] for n in with_words], [sigs[n] for n in with_words]):
        uf.union(with_words[a], with_words[b])

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
    return DedupResult(kept, dropped, clusters, representative_of, dict(zip(keys, entries, strict=True)))
