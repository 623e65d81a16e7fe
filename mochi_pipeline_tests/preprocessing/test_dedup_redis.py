"""Deduplication with its LSH index in a real Redis (``dedup.lsh_storage: redis``): the same chunks as in memory.

Each test starts its own ``redis-server`` on a free loopback port, without persistence, and stops it after.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from mochi_pipeline.config import ConfigError, parse_config
from mochi_pipeline.ingestion.git_connector import open_repository
from mochi_pipeline.ingestion.settings import SourceSettings
from mochi_pipeline.ingestion.source_loader import load_source_files
from mochi_pipeline.preprocessing import deduplicator
from mochi_pipeline.preprocessing.code_chunker import chunk_files
from mochi_pipeline.preprocessing.deduplicator import DedupResult, deduplicate, signed_texts
from mochi_pipeline.preprocessing.lsh_index import DedupIndexError, band_key, index_name, open_index
from mochi_pipeline.preprocessing.minhash import MAX_FULL_BUCKET, band_groups, lsh_bands, text_key
from mochi_pipeline.preprocessing.settings import ChunkingSettings, DedupSettings
from mochi_pipeline.records import Chunk, SourceFile
from mochi_pipeline_tests.loopback import PortTaken, closed_port, on_a_free_port, port_taken

pytestmark = pytest.mark.slow  # starts a redis-server of its own per test

REDIS_SERVER = Path("/usr/bin/redis-server")
PASSWORD_ENV = "MOCHI_TEST_REDIS_PASSWORD"

HANDLER = '''def {name}(request, settings):
    """Answer one request with the configured backend and record how long it took to answer."""
    started = time.monotonic()
    backend = settings.backends[request.kind]
    response = backend.send(request.payload, timeout=settings.timeout, retries=settings.retries)
    metrics.observe("backend_latency", time.monotonic() - started, tags={{"kind": request.kind}})
    if response.status >= 500:
        raise BackendError(f"{{request.kind}} failed with {{response.status}} after {{settings.retries}} tries")
    return response.body
'''
LOADER = '''def {name}(path, schema):
    with open(path, encoding="utf-8") as handle:
        rows = [line.rstrip("\\n").split(",") for line in handle if line.strip()]
    header, body = rows[0], rows[1:]
    missing = [column for column in schema.required if column not in header]
    if missing:
        raise ValueError("missing columns: " + ", ".join(missing))
    return [{{key: schema.{cast}(key, value) for key, value in zip(header, row)}} for row in body]
'''
SLUGIFY = '''def slugify(title):
    words = [word.lower() for word in title.replace("-", " ").split() if word.isalnum()]
    return "-".join(words)[:80] or "untitled"
'''


def _unrelated(rng: random.Random, n: int) -> str:
    names = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(7)) for _ in range(12)]
    body = "\n".join(f"    {names[k]} = {names[k + 1]}({names[k + 2]}, {rng.randint(0, 999)})" for k in range(9))
    return f"def unrelated_{n}({names[0]}, {names[1]}):\n{body}\n    return {names[9]}\n"


def _planted_files() -> list[SourceFile]:
    """Python files with planted duplicates: 96 copies of one handler differing only in its name (LSH buckets
    larger than MAX_FULL_BUCKET), loaders differing in two words (near the threshold), exact copies of
    slugify() up to whitespace, and unrelated functions; the files' dates differ, so do the representatives."""
    rng = random.Random(7)
    functions = [HANDLER.format(name=f"handle_{i}") for i in range(96)]
    functions += [LOADER.format(name=f"load_{kind}", cast=cast) for kind in ("orders", "users", "items")
                  for cast in ("convert", "parse", "coerce")]
    functions += [SLUGIFY, SLUGIFY.replace("    ", "\t"), SLUGIFY.replace(" = ", "  =  ")] * 2
    functions += [_unrelated(rng, n) for n in range(40)]
    rng.shuffle(functions)
    files = []
    for n in range(0, len(functions), 8):
        text = "import time\n\n\n" + "\n\n".join(functions[n:n + 8])
        files.append(SourceFile(path=f"pkg/{'sub/' * (n % 3)}mod_{n:03d}.py", language="python", text=text,
                                sha=hashlib.sha1(text.encode()).hexdigest(), size=len(text),
                                last_commit_date=f"2024-{1 + n % 12:02d}-{1 + n % 27:02d}T00:00:00+00:00"))
    return files


def _planted_chunks() -> list[Chunk]:
    chunks, _ = chunk_files(_planted_files(), ChunkingSettings(), workers=1)
    return chunks


def _sample_chunks(sample_repo: Path, tmp_path: Path, rev: str) -> list[Chunk]:
    repo = open_repository(str(sample_repo), tmp_path / "clones")
    files, _ = load_source_files(repo, repo.resolve_rev(rev), SourceSettings())
    chunks, _ = chunk_files([f for f in files if f.language == "python"], ChunkingSettings(), workers=1)
    return chunks


def _outcome(result: DedupResult) -> tuple:
    return [c.id for c in result.kept], result.dropped, result.clusters, result.representative_of


def _start_redis(port: int, data: Path) -> tuple[subprocess.Popen, int]:
    """redis-server on ``port``, answering; ``PortTaken`` when another process took the port first."""
    log = data / f"redis-{port}.log"
    server = subprocess.Popen(
        [str(REDIS_SERVER), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(data), "--logfile", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    with redis.Redis(port=port, socket_connect_timeout=1, socket_timeout=1) as client:
        while True:
            try:
                if client.info("server")["process_id"] == server.pid:  # ours answers, not whoever took the port
                    return server, port
            except (redis.ConnectionError, redis.TimeoutError):
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                server.wait()
                text = log.read_text() if log.exists() else ""
                raise (PortTaken if port_taken(text) else RuntimeError)(f"redis-server did not start: {text}")
            time.sleep(0.05)


@pytest.fixture
def redis_url(tmp_path) -> Iterator[str]:
    """A real redis-server of its own on 127.0.0.1, without persistence, stopped after the test."""
    if not REDIS_SERVER.exists():
        pytest.fail(f"no redis-server at {REDIS_SERVER}: run `make system-deps` (apt-get install redis-server)")
    data = tmp_path / "redis"
    data.mkdir()
    server, port = on_a_free_port(lambda port: _start_redis(port, data))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def client(redis_url) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as c:
        yield c


def _redis_settings(redis_url: str, **kwargs) -> DedupSettings:
    return DedupSettings(lsh_storage="redis", redis_url=redis_url, redis_password_env=PASSWORD_ENV, **kwargs)


def _indexed(result: DedupResult) -> set[bytes]:
    """Text keys a run indexes: those of the texts with words, one per exact group."""
    return {k.encode() for k, (sig, _) in result.signatures.items() if sig is not None}


def test_redis_index_keeps_exactly_what_memory_keeps(redis_url, client, sample_repo, tmp_path):
    chunks = _planted_chunks() + _sample_chunks(sample_repo, tmp_path, "HEAD~1")
    settings = _redis_settings(redis_url)
    memory = deduplicate(chunks, DedupSettings())
    assert client.dbsize() == 0  # memory leaves Redis alone

    in_redis = deduplicate(chunks, settings)

    assert _outcome(in_redis) == _outcome(memory)
    assert memory.dropped["exact"] >= 5 and memory.dropped["near"] >= 95
    assert max(len(ids) for ids in memory.clusters) >= 96
    # Some band's bucket holds more than MAX_FULL_BUCKET texts: the star-shaped pairing is exercised too.
    bands, rows = lsh_bands(settings.threshold, settings.num_perm)
    sigs = [sig for sig, _ in memory.signatures.values() if sig is not None]
    assert max(max(Counter(band_key(s, b * rows, (b + 1) * rows) for s in sigs).values())
               for b in range(bands)) > MAX_FULL_BUCKET

    # Its buckets, read back from Redis, are the in-memory banding's, bucket for bucket.
    keys = [k for k, (sig, _) in memory.signatures.items() if sig is not None]
    with open_index(settings) as index:
        buckets, missing = index.buckets([k.encode() for k in keys], [memory.signatures[k][0] for k in keys])
    in_memory = band_groups(np.stack([memory.signatures[k][0] for k in keys]), settings.threshold)
    assert missing == [] and Counter(map(tuple, map(sorted, buckets))) == Counter(
        tuple(sorted(map(int, g))) for g in in_memory)

    # The index really lives in that Redis, under datasketch's key layout.
    name = index_name(settings).encode()
    indexed = _indexed(memory)
    assert set(client.hkeys(name + b"_keys")) == indexed
    assert set(client.zrange(name + b"_seen", 0, -1)) == indexed
    assert client.zscore(f"{settings.redis_prefix}:indexes", name) is not None
    key = text_key(chunks[0].text)
    sig = memory.signatures[key][0]
    stored = client.lrange(name + b"_keys" + key.encode(), 0, -1)
    assert stored == [band_key(sig, b * rows, (b + 1) * rows) for b in range(bands)]
    for b, h in enumerate(stored):
        table = name + b"_bucket_" + b.to_bytes(2, "big")
        assert key.encode() in client.smembers(client.hget(table, h))


def test_a_later_run_reuses_the_index_and_old_entries_change_nothing(redis_url, client, sample_repo, tmp_path):
    """At HEAD clamp() in util.py is no longer a copy: the entries of HEAD~1 still in the index must not
    make it one again, and the texts both revisions share are not written again."""
    settings = _redis_settings(redis_url)
    before = deduplicate(_sample_chunks(sample_repo, tmp_path, "HEAD~1"), settings)
    head = _sample_chunks(sample_repo, tmp_path, "HEAD")
    name = index_name(settings).encode()
    shared = sorted(_indexed(before) & {text_key(c.text).encode() for c in head})[0]
    client.delete(name + b"_keys" + shared)  # writing it again would bring this list back

    after = deduplicate(head, settings)

    assert _outcome(after) == _outcome(deduplicate(head, DedupSettings()))
    by_id = {c.id: c for c in head}
    assert not any("clamp" in {by_id[i].symbol for i in ids} for ids in after.clusters)
    new = _indexed(after) - _indexed(before)
    assert new and set(client.hkeys(name + b"_keys")) == _indexed(before) | _indexed(after)
    assert client.exists(name + b"_keys" + shared) == 0  # the texts both revisions share were not written again


def test_half_written_and_evicted_entries_are_written_again(redis_url, client):
    chunks = _planted_chunks()
    settings = _redis_settings(redis_url)
    memory = deduplicate(chunks, DedupSettings())
    deduplicate(chunks, settings)
    name = index_name(settings).encode()
    bands, _ = lsh_bands(settings.threshold, settings.num_perm)
    half, evicted = sorted(_indexed(memory))[:2]
    client.zrem(name + b"_seen", half)  # as if a run stopped before marking it written
    first_bucket = client.lrange(name + b"_keys" + evicted, 0, -1)[0]
    client.srem(client.hget(name + b"_bucket_\x00\x00", first_bucket), evicted)  # as if Redis evicted it

    assert _outcome(deduplicate(chunks, settings)) == _outcome(memory)
    assert client.llen(name + b"_keys" + half) == bands  # removed, then written once
    assert evicted in client.smembers(client.hget(name + b"_bucket_\x00\x00", first_bucket))


def test_entries_and_indexes_unused_for_prune_days_are_removed(redis_url, client, sample_repo, tmp_path):
    planted, sample = _planted_chunks(), _sample_chunks(sample_repo, tmp_path, "HEAD")
    settings = _redis_settings(redis_url, redis_prune_days=1)
    other = _redis_settings(redis_url, num_perm=128)  # an index of other settings, given up since
    old = deduplicate(planted, settings)
    deduplicate(planted, other)
    name, other_name = index_name(settings).encode(), index_name(other).encode()
    assert client.keys(other_name + b"_*")
    two_days_ago = time.time() - 2 * 86_400
    client.zadd(name + b"_seen", dict.fromkeys(client.zrange(name + b"_seen", 0, -1), two_days_ago))
    client.zadd(f"{settings.redis_prefix}:indexes", {other_name: two_days_ago})

    result = deduplicate(sample, settings)

    assert _outcome(result) == _outcome(deduplicate(sample, DedupSettings()))
    assert set(client.hkeys(name + b"_keys")) == _indexed(result)
    gone = sorted(_indexed(old) - _indexed(result))[0]
    assert not client.exists(name + b"_keys" + gone)
    assert client.keys(other_name + b"_*") == []
    assert client.zrange(f"{settings.redis_prefix}:indexes", 0, -1) == [name]
    # Every bucket left holds a text of this run: the pruned texts' buckets went with them.
    kept = _indexed(result)
    for table in client.scan_iter(match=name + b"_bucket_*"):
        if client.type(table) == b"hash":
            assert all(client.smembers(k) <= kept and client.smembers(k) for k in client.hvals(table))


def test_unreachable_redis_names_the_setting_and_computes_nothing(monkeypatch):
    with closed_port() as port:  # nothing listens there, nor can while the test runs
        _unreachable(port, monkeypatch)


def _unreachable(port: int, monkeypatch) -> None:
    computed = []
    monkeypatch.setattr(deduplicator, "signed_texts", lambda *a, **k: computed.append(a) or signed_texts(*a, **k))
    settings = DedupSettings(lsh_storage="redis", redis_url=f"redis://127.0.0.1:{port}/0", redis_timeout_s=1)

    with pytest.raises(DedupIndexError) as err:
        deduplicate(_planted_chunks(), settings)

    message = str(err.value)
    assert f"dedup.redis_url = redis://127.0.0.1:{port}/0" in message
    assert "dedup.lsh_storage: memory" in message and "Nothing is lost" in message
    assert computed == []  # failed before any signature was computed


def test_the_password_comes_from_the_named_environment_variable(redis_url, client, monkeypatch):
    chunks = _planted_chunks()[:60]
    client.config_set("requirepass", "correct horse")
    settings = _redis_settings(redis_url)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(DedupIndexError, match=f"environment variable {PASSWORD_ENV} \\(it is not set\\)"):
        deduplicate(chunks, settings)
    monkeypatch.setenv(PASSWORD_ENV, "wrong staple")
    with pytest.raises(DedupIndexError) as err:
        deduplicate(chunks, settings)
    assert "wrong staple" not in str(err.value) and "it is set" in str(err.value)

    monkeypatch.setenv(PASSWORD_ENV, "correct horse")
    assert _outcome(deduplicate(chunks, settings)) == _outcome(deduplicate(chunks, DedupSettings()))


def test_redis_settings_are_checked_and_leave_the_signature_alone(tmp_path):
    with pytest.raises(ConfigError) as err:
        parse_config({"dedup": {"lsh_storage": "redis", "redis_url": "redis://:hunter2@cache:6379/0"}}, tmp_path)
    assert "redis_password_env" in str(err.value) and "hunter2" not in str(err.value)
    with pytest.raises(ConfigError, match="redis_url is not a Redis URL"):
        parse_config({"dedup": {"redis_url": "http://cache:6379"}}, tmp_path)
    with pytest.raises(ConfigError, match="at least 2 LSH bands"):
        parse_config({"dedup": {"lsh_storage": "redis", "threshold": 1.0}}, tmp_path)
    with pytest.raises(ConfigError, match="dedup.redis_prefix"):
        parse_config({"dedup": {"redis_prefix": "mochi:*"}}, tmp_path)
    # Where the index lives does not change the result, so not the code version of deduplicated_chunks.
    moved = DedupSettings(lsh_storage="redis", redis_url="unix:///run/redis.sock", redis_prune_days=0)
    assert moved.signature() == DedupSettings().signature() != DedupSettings(threshold=0.8).signature()


def test_a_server_whose_port_was_taken_is_started_again_on_another(tmp_path, monkeypatch):
    import socket

    from mochi_pipeline_tests import loopback

    with socket.socket() as squatter:  # another process's server, on the port the first pick returns
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        with pytest.raises(PortTaken):
            _start_redis(taken, tmp_path)
        picks = iter([taken, loopback.free_port()])
        monkeypatch.setattr(loopback, "free_port", lambda: next(picks))
        server, port = on_a_free_port(lambda p: _start_redis(p, tmp_path))
    try:
        assert port != taken
        with redis.Redis(port=port) as client:
            assert client.ping()
    finally:
        server.terminate()
        server.wait(timeout=10)
