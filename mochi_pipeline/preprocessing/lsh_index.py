"""Where deduplication's LSH index lives: in memory (the default) or in Redis, with the same result.

``MemoryIndex`` bands the signatures with numpy (``minhash.near_pairs``), anew in each run.
``RedisIndex`` (``dedup.lsh_storage: redis``) keeps them in datasketch's ``MinHashLSH`` with its
Redis storage, in one index per (n-gram, permutations, seed, bands, rows) under ``dedup.redis_prefix``.
Either way the buckets become candidate pairs and confirmed pairs through the same code
(``minhash.candidate_pairs``, ``minhash.confirmed_pairs``), so the same chunks are kept.

Why keeping the Redis index between runs is correct: an entry is keyed by a text key (the hash of
the whitespace-normalised text) and holds that text's band hashes, a function of the text and of the
settings that name the index. An entry therefore never goes stale; it can only be missing or not
needed. A run adds the texts the index lacks, then reads, band by band, the buckets of its own texts
and keeps only its own texts in them: each bucket so filtered is exactly the one the in-memory
banding forms, whatever else the index holds (texts of deleted or edited chunks, other projects,
other runs). Every text of the run must be found in each band's buckets; one that is not (evicted by
Redis, changed by hand) is written again once, and a second miss is an error, never a silently
different result.

Interrupted runs and concurrent ones: datasketch writes an entry in several commands, so an entry
counts only once its text key is in the ``<index>_seen`` sorted set, added after its writes returned;
one left half-written is removed and written again. Writers (adding, pruning, dropping an old index)
hold ``<index>_lock``; reading needs no lock, because only entries unseen for ``dedup.redis_prune_days``
are ever removed and a run marks its own texts as seen, under the lock, before it reads.

Growth: a text key's score in ``<index>_seen`` is the last time a run needed it. Entries unseen for
``redis_prune_days`` are removed, and so are whole indexes (of other dedup settings) no run used as
long, listed with their last use in the ``<prefix>:indexes`` sorted set.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from typing import Any, Protocol

import numpy as np
from datasketch import MinHash, MinHashLSH

from mochi_pipeline.preprocessing import minhash
from mochi_pipeline.preprocessing.settings import DedupSettings, LSHStorage

READ_BATCH = 10_000  # commands per pipeline when reading
INSERT_BATCH = 10_000  # texts per datasketch insertion session (the lock is renewed between two)
LOCK_TTL_S = 300  # a writer that dies frees the index after this long
LOCK_WAIT_S = 3600  # how long a run waits for another one writing the same index
DAY_S = 86_400


def batched(items: Iterable, n: int) -> Iterator[list]:
    """``items`` in lists of ``n`` (itertools.batched from Python 3.12)."""
    it = iter(items)
    while batch := list(islice(it, n)):
        yield batch


class DedupIndexError(RuntimeError):
    """The LSH index cannot be used; the message names the setting to fix."""


class LSHIndex(Protocol):
    def near_pairs(self, keys: Sequence[str], sigs: Sequence[np.ndarray]) -> set[tuple[int, int]]:
        """Index pairs (i < j) of near-duplicate texts, given their text keys and MinHash signatures."""
        ...


class MemoryIndex:
    """LSH banding in memory, built anew for each call."""

    def __init__(self, settings: DedupSettings) -> None:
        self.threshold = settings.threshold

    def near_pairs(self, keys: Sequence[str], sigs: Sequence[np.ndarray]) -> set[tuple[int, int]]:
        return minhash.near_pairs(list(sigs), self.threshold)


@contextmanager
def open_index(settings: DedupSettings) -> Iterator[LSHIndex]:
    """The index ``settings.lsh_storage`` names; a Redis one is connected to (or fails) on entry."""
    if settings.lsh_storage == LSHStorage.MEMORY:
        yield MemoryIndex(settings)
        return
    index = RedisIndex(settings)
    try:
        yield index
    finally:
        index.close()


def index_name(settings: DedupSettings) -> str:
    """The Redis basename of the index for these settings (the threshold counts through its LSH bands)."""
    bands, rows = minhash.lsh_bands(settings.threshold, settings.num_perm)
    return f"{settings.redis_prefix}:lsh-n{settings.ngram}-p{settings.num_perm}-s{settings.seed}-b{bands}-r{rows}"


def connection_kwargs(settings: DedupSettings) -> dict[str, Any]:
    """``redis.Redis`` arguments for ``settings.redis_url``, with timeouts and retries, without a password."""
    from redis.backoff import ExponentialBackoff
    from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url
    from redis.exceptions import ConnectionError, TimeoutError
    from redis.retry import Retry

    kwargs = parse_url(settings.redis_url)
    connection_class = kwargs.pop("connection_class", None)
    if connection_class is UnixDomainSocketConnection:
        kwargs["unix_socket_path"] = kwargs.pop("path")
    elif connection_class is SSLConnection:
        kwargs["ssl"] = True
    kwargs.pop("password", None)  # the settings refuse one in the URL; never take it from there
    return {
        **kwargs,
        "socket_timeout": settings.redis_timeout_s,
        "socket_connect_timeout": settings.redis_timeout_s,
        "retry": Retry(ExponentialBackoff(cap=2.0, base=0.1), 3, supported_errors=(ConnectionError, TimeoutError)),
    }


def band_key(sig: np.ndarray, start: int, end: int) -> bytes:
    """The bucket key datasketch's MinHashLSH gives rows ``start:end`` of an affine32 signature."""
    return bytes(np.asarray(sig[start:end], dtype=np.uint32).byteswap().data)


class RedisIndex:
    """datasketch's MinHashLSH on Redis, kept between runs (see the module docstring)."""

    def __init__(self, settings: DedupSettings) -> None:
        import redis

        self.settings = settings
        self.bands, self.rows = minhash.lsh_bands(settings.threshold, settings.num_perm)
        self.name = index_name(settings).encode()
        self.seen = self.name + b"_seen"
        self.registry = f"{settings.redis_prefix}:indexes".encode()
        kwargs = connection_kwargs(settings)
        # Read now, at run time; datasketch reads the same variable itself: the value is never in a config.
        self._client = redis.Redis(**kwargs, password=os.environ.get(settings.redis_password_env) or None)
        try:
            self._client.ping()
        except redis.RedisError as err:
            self._client.close()
            raise self._error(err) from None
        self.lsh = MinHashLSH(
            num_perm=settings.num_perm,
            params=(self.bands, self.rows),
            storage_config={"type": "redis", "basename": self.name,
                            "redis": {**kwargs, "password": {"env": settings.redis_password_env}}},
            prepickle=False,  # text keys are bytes already: readable in Redis, no pickling
        )
        self._permutations = MinHash(num_perm=settings.num_perm, seed=settings.seed,
                                     scheme=minhash.SCHEME).permutations

    def close(self) -> None:
        self._client.close()

    def _error(self, err: Exception) -> DedupIndexError:
        from redis.exceptions import AuthenticationError

        env = self.settings.redis_password_env
        if isinstance(err, AuthenticationError):
            state = "is set" if os.environ.get(env) else "is not set"
            fix = f"put the right password in the environment variable {env} (it {state})"
        else:
            fix = ("start Redis there or point dedup.redis_url at a running one (maxmemory-policy noeviction), "
                   "or set dedup.lsh_storage: memory in mochi.yaml")
        return DedupIndexError(
            f"dedup.lsh_storage is redis, but the Redis at dedup.redis_url = {self.settings.redis_url} cannot be "
            f"used: {err}. To fix it, {fix}; then run again. Nothing is lost: the code chunks and their MinHash "
            "signatures are kept, and index entries count only once fully written.")

    def near_pairs(self, keys: Sequence[str], sigs: Sequence[np.ndarray]) -> set[tuple[int, int]]:
        import redis

        if len(keys) < 2:
            return set()
        names = [k.encode() for k in keys]
        try:
            for attempt in range(2):
                self._sync(names, sigs)
                buckets, missing = self.buckets(names, sigs)
                if not missing:
                    break
                if attempt == 1:
                    raise DedupIndexError(
                        f"{len(missing)} texts were written to the Redis LSH index {self.name.decode()} but are "
                        f"missing from its buckets: Redis drops keys (set maxmemory-policy noeviction, or give it "
                        f"more memory), or something else writes under dedup.redis_prefix = "
                        f"{self.settings.redis_prefix}.")
                # Evicted or changed by hand: no longer counted as written, so the next sync writes them again.
                for batch in batched((names[i] for i in missing), READ_BATCH):
                    self._client.zrem(self.seen, *batch)
        except redis.RedisError as err:
            raise self._error(err) from None
        return minhash.confirmed_pairs(minhash.candidate_pairs(buckets), sigs, self.settings.threshold)

    @contextmanager
    def _lock(self, name: bytes, blocking: bool = True) -> Iterator[Any]:
        lock = self._client.lock(name + b"_lock", timeout=LOCK_TTL_S, blocking_timeout=LOCK_WAIT_S)
        if not lock.acquire(blocking=blocking):
            if not blocking:
                yield None
                return
            raise DedupIndexError(f"Another run has been writing the Redis LSH index {name.decode()} for more than "
                                  f"{LOCK_WAIT_S} s; run again when it is done.")
        try:
            yield lock
        finally:
            lock.release()

    def _sync(self, names: list[bytes], sigs: Sequence[np.ndarray]) -> None:
        """Index every text of ``names`` not in it yet and mark them all as seen now (then prune)."""
        r = self._client
        with self._lock(self.name) as lock:
            now = time.time()
            r.zadd(self.registry, {self.name: now})
            scores: list[float | None] = []
            for batch in batched(names, READ_BATCH):
                scores.extend(r.zmscore(self.seen, batch))
            missing = [i for i, score in enumerate(scores) if score is None]
            for batch in batched(missing, READ_BATCH):  # half-written by an interrupted run: removed first
                for i, stored in zip(batch, self.lsh.keys.getmany(*(names[i] for i in batch)), strict=True):
                    if stored:
                        self.lsh.remove(names[i])
                lock.reacquire()
            for batch in batched(missing, INSERT_BATCH):
                with self.lsh.insertion_session() as session:
                    for i in batch:
                        mh = MinHash(num_perm=self.settings.num_perm, seed=self.settings.seed, hashvalues=sigs[i],
                                     permutations=self._permutations, scheme=minhash.SCHEME)
                        session.insert(names[i], mh, check_duplication=False)
                r.zadd(self.seen, {names[i]: now for i in batch})  # written: from now on an entry that counts
                lock.reacquire()
            for batch in batched((names[i] for i, score in enumerate(scores) if score is not None), READ_BATCH):
                r.zadd(self.seen, dict.fromkeys(batch, now))
                lock.reacquire()
            if self.settings.redis_prune_days:
                self._prune(now - self.settings.redis_prune_days * DAY_S, lock)

    def _prune(self, cutoff: float, lock: Any) -> None:
        """Remove entries unseen since ``cutoff``, and other indexes unused since then."""
        r = self._client
        for batch in batched(r.zrangebyscore(self.seen, "-inf", cutoff), READ_BATCH):
            r.zrem(self.seen, *batch)  # first: a half-removed entry is then one to write again, never one to trust
            for name, stored in zip(batch, self.lsh.keys.getmany(*batch), strict=True):
                if stored:
                    self.lsh.remove(name)
            lock.reacquire()
        for other in r.zrangebyscore(self.registry, "-inf", cutoff):
            if other != self.name:
                self._drop_index(other, cutoff)

    def _drop_index(self, name: bytes, cutoff: float) -> None:
        r = self._client
        with self._lock(name, blocking=False) as lock:
            if lock is None:  # in use right now: not unused
                return
            score = r.zscore(self.registry, name)
            if score is None or score >= cutoff:
                return
            for batch in batched(r.scan_iter(match=name + b"_*", count=READ_BATCH), READ_BATCH):
                r.unlink(*(key for key in batch if key != name + b"_lock"))
                lock.reacquire()
            r.zrem(self.registry, name)  # last: dropping again after an interruption finds what is left

    def buckets(self, names: list[bytes], sigs: Sequence[np.ndarray]) -> tuple[list[list[int]], list[int]]:
        """Each band's buckets of two or more of ``names`` (indexed texts), as indices into ``names``, and the
        indices of those some band's buckets lack."""
        index_of = {name: i for i, name in enumerate(names)}
        found = np.zeros(len(names), dtype=np.int64)
        buckets: list[list[int]] = []
        for (start, end), table in zip(self.lsh.hashranges, self.lsh.hashtables, strict=True):
            keys = list(dict.fromkeys(band_key(sig, start, end) for sig in sigs))
            for batch in batched(keys, READ_BATCH):
                for members in table.getmany(*batch):
                    mine = [index_of[m] for m in members if m in index_of]
                    found[mine] += 1
                    if len(mine) > 1:
                        buckets.append(mine)
        return buckets, [int(i) for i in np.flatnonzero(found != self.bands)]
