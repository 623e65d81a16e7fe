"""MinHash signatures and LSH banding, vectorised with numpy, and a persisted store of signatures.

A text's shingles are its word n-grams. Each word is hashed once (crc32, memoised); an n-gram's
hash combines its words' hashes polynomially, for all n-grams of a text at once. The signature is
datasketch's ``MinHash`` with the ``affine32`` scheme over those shingle hashes: the same
permutations and the same values ``MinHash.update_batch`` computes (tested), without a Python
call per shingle. Banding uses the bands and rows datasketch's ``MinHashLSH`` would choose; buckets become candidate
pairs and confirmed pairs here whether the banding ran in memory or in a Redis index (``lsh_index``).

``SignatureStore`` keeps signatures by text hash under the artifacts root, per settings, so a
text seen once is never hashed again: the chunking workers fill it as they cut chunks, and
deduplication reads it.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path

import numpy as np
from datasketch import MinHash

from mochi_pipeline.storage import atomic_write_bytes, file_lock

WORDS = re.compile(r"\w+")
SCHEME = "affine32"
_POLY = np.uint64(0x100000001B3)  # odd 64-bit multiplier (FNV prime): combines word hashes into an n-gram hash
# A bucket larger than this is paired with its first member only (keeps boilerplate clusters linear).
MAX_FULL_BUCKET = 64

_word_hashes: dict[str, int] = {}


def _word_hash(word: str) -> int:
    h = _word_hashes.get(word)
    if h is None:
        h = _word_hashes[word] = zlib.crc32(word.encode("utf-8"))
    return h


def text_key(text: str) -> str:
    """Hash of the text with every whitespace run collapsed: the key of an exact duplicate."""
    return hashlib.blake2b(" ".join(text.split()).encode("utf-8"), digest_size=16).hexdigest()


def shingle_hashes(tokens: list[str], n: int) -> np.ndarray:
    """uint32 hashes of the n-grams of ``tokens`` (n shrinks to the token count for short texts).

    Repeated n-grams repeat their hash: a MinHash is the same either way, and not removing them is cheaper.
    """
    k = min(n, len(tokens))
    if k == 0:
        return np.empty(0, dtype=np.uint32)
    words = np.fromiter((_word_hash(t) for t in tokens), dtype=np.uint64, count=len(tokens))
    grams = len(words) - k + 1
    acc = words[:grams].copy()
    for j in range(1, k):  # wraps modulo 2^64, as intended
        acc *= _POLY
        acc += words[j:j + grams]
    return (acc ^ (acc >> np.uint64(32))).astype(np.uint32)


@cache
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutations for (num_perm, seed)."""
    a, b = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations
    return a.astype(np.uint32), b.astype(np.uint32)


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def signed(texts: Iterable[str], ngram: int, num_perm: int, seed: int, tokens: re.Pattern[str] = WORDS,
           lower: bool = False) -> list[tuple[np.ndarray | None, int]]:
    """Each text's MinHash signature over its ``ngram``-grams of ``tokens`` (None without tokens), and its
    token count."""
    a, b = permutations(num_perm, seed)
    out: list[tuple[np.ndarray | None, int]] = []
    for text in texts:
        found = tokens.findall(text.lower() if lower else text)
        hashes = shingle_hashes(found, ngram)
        if not hashes.size:
            out.append((None, 0))
            continue
        with np.errstate(over="ignore"):
            values = np.multiply.outer(_fmix32(hashes), a)
            values += b
        out.append((values.min(axis=0), len(found)))
    return out


def signatures(texts: Iterable[str], ngram: int, num_perm: int, seed: int, tokens: re.Pattern[str] = WORDS,
               lower: bool = False) -> list[np.ndarray | None]:
    """MinHash signature of each text (see ``signed``)."""
    return [sig for sig, _ in signed(texts, ngram, num_perm, seed, tokens, lower)]


def signature(text: str, ngram: int, num_perm: int, seed: int, tokens: re.Pattern[str] = WORDS,
              lower: bool = False) -> np.ndarray | None:
    """MinHash signature of one text (see ``signatures``)."""
    return signatures([text], ngram, num_perm, seed, tokens, lower)[0]


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


def band_groups(matrix: np.ndarray, threshold: float) -> Iterable[np.ndarray]:
    """Row indices that share a whole LSH band, one array per bucket of two or more."""
    bands, r = lsh_bands(threshold, matrix.shape[1])
    for band in range(bands):
        block = np.ascontiguousarray(matrix[:, band * r:(band + 1) * r])
        keys = block.view(np.dtype((np.void, block.dtype.itemsize * r))).ravel()
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        shared = np.flatnonzero(counts[inverse] > 1)
        if shared.size == 0:
            continue
        order = shared[np.argsort(inverse[shared], kind="stable")]
        yield from np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1)


def candidate_pairs(buckets: Iterable[Iterable[int]]) -> set[tuple[int, int]]:
    """Index pairs (i < j) to compare from LSH buckets of two or more: every pair in a bucket, or for a bucket
    larger than ``MAX_FULL_BUCKET`` its lowest index with each other one."""
    pairs: set[tuple[int, int]] = set()
    for bucket in buckets:
        members = sorted(int(i) for i in bucket)
        if len(members) > MAX_FULL_BUCKET:
            pairs.update((members[0], b) for b in members[1:])
        else:
            pairs.update((a, b) for n, a in enumerate(members) for b in members[n + 1:])
    return pairs


def confirmed_pairs(pairs: Iterable[tuple[int, int]], sigs: Sequence[np.ndarray] | np.ndarray,
                    threshold: float) -> set[tuple[int, int]]:
    """The ``pairs`` whose signatures' estimated Jaccard is at least ``threshold``."""
    return {(i, j) for i, j in pairs if float(np.mean(sigs[i] == sigs[j])) >= threshold}


def near_pairs(sigs: list[np.ndarray], threshold: float) -> set[tuple[int, int]]:
    """Index pairs (i < j) sharing an LSH band whose estimated Jaccard is at least ``threshold``."""
    if len(sigs) < 2:
        return set()
    matrix = np.stack(sigs)
    return confirmed_pairs(candidate_pairs(band_groups(matrix, threshold)), matrix, threshold)


def near_any(queries: list[np.ndarray], references: list[np.ndarray], threshold: float) -> set[int]:
    """Indices of ``queries`` with a near duplicate (estimated Jaccard >= threshold) among ``references``."""
    if not queries or not references:
        return set()
    matrix = np.stack([*references, *queries])
    first_query = len(references)
    hits: set[int] = set()
    for group in band_groups(matrix, threshold):
        refs = group[group < first_query]
        for q in group[group >= first_query]:
            if int(q) - first_query not in hits and any(
                float(np.mean(matrix[q] == matrix[ref])) >= threshold for ref in refs[:MAX_FULL_BUCKET]
            ):
                hits.add(int(q) - first_query)
    return hits


class SignatureStore:
    """Signed texts by text key, for one use (``name``: how texts are tokenised) and one (n-gram,
    permutations, seed), in one file under ``root``.

    An entry is (signature or None, token count). Written atomically, so a reader sees the old store
    or the new one. An unreadable store is an empty one: it is a cache, always safe to delete.
    """

    def __init__(self, root: str | os.PathLike, name: str, ngram: int, num_perm: int, seed: int) -> None:
        self.path = Path(root) / f"minhash-{name}-n{ngram}-p{num_perm}-s{seed}.npz"
        self.num_perm = num_perm

    def load(self) -> dict[str, tuple[np.ndarray | None, int]]:
        try:
            with np.load(self.path, allow_pickle=False) as data:
                keys, sigs, counts = data["keys"], data["sigs"], data["counts"]
        except (OSError, ValueError, KeyError):
            return {}
        if sigs.ndim != 2 or sigs.shape[1] != self.num_perm or not len(keys) == len(sigs) == len(counts):
            return {}
        return {str(k): (sigs[i] if counts[i] else None, int(counts[i])) for i, k in enumerate(keys)}

    def save(self, entries: Mapping[str, tuple[np.ndarray | None, int]]) -> None:
        keys = sorted(entries)
        empty = np.zeros(self.num_perm, dtype=np.uint32)
        sigs = np.stack([entries[k][0] if entries[k][0] is not None else empty for k in keys]) if keys \
            else np.empty((0, self.num_perm), np.uint32)
        counts = np.array([entries[k][1] for k in keys], dtype=np.int64)
        buffer = io.BytesIO()
        np.savez(buffer, keys=np.array(keys, dtype="U32"), sigs=sigs, counts=counts)
        atomic_write_bytes(self.path, buffer.getvalue())

    def add(self, entries: Mapping[str, tuple[np.ndarray | None, int]]) -> None:
        """Merge ``entries`` into the store (nothing written when all are there already)."""
        with file_lock(self.path.with_suffix(".lock")):
            stored = self.load()
            if any(k not in stored for k in entries):
                self.save({**stored, **entries})
