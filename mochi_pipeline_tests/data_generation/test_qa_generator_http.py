"""The OpenAI-compatible back-end against a real HTTP server on 127.0.0.1 speaking the chat-completions format."""

import email.utils
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mochi_pipeline.data_generation import llm_client
from mochi_pipeline.data_generation.llm_client import (
    MalformedReply,
    OpenAICompatibleQA,
    QAEndpointError,
    parse_pairs,
    retry_after_seconds,
)
from mochi_pipeline.data_generation.qa_generator import qa_pairs, qa_subjects
from mochi_pipeline_tests.data_generation.chat_server import API_KEY, ChatServer

KEY_ENV = "MOCHI_TEST_QA_KEY"


@pytest.fixture(scope="module")
def subjects(upstream):
    wanted = {"centroid", "perimeter", "scaled", "clamp", "distance_to"}
    return [s for s in qa_subjects(upstream.chunks, upstream.docs, 100) if s.name in wanted]


def client(url, **kw):
    return OpenAICompatibleQA(base_url=url, model="tiny", api_key_env=KEY_ENV, backoff_s=0.01, max_retries=2, **kw)


def test_retries_malformed_replies_failures_and_cache(subjects, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, API_KEY)
    log = logging.getLogger("qa-test")
    waits: list[float] = []  # what the client chose to wait, recorded instead of slept (no clock in the test)
    monkeypatch.setattr(llm_client.time, "sleep", waits.append)
    with ChatServer() as server, caplog.at_level(logging.WARNING, logger="qa-test"):
        batch = client(server.url).ask(subjects, pairs_per_subject=3, cache_dir=tmp_path, log=log)
        assert batch.outcomes == {"answered": 2, "malformed_reply": 2, "request_failed": 1}
        assert server.requests == {"centroid": 2, "perimeter": 1, "scaled": 1, "clamp": 3, "distance_to": 1}
        assert 1.0 in waits  # the 429's Retry-After: 1 was honored (backoff_s alone would wait 0.01 s)
        assert {p.subject.name for p in batch.pairs} == {"centroid", "distance_to"} and len(batch.pairs) == 4
        assert "about `perimeter` (pkg/core.py) is malformed: reply is not JSON" in caplog.text
        assert "about `scaled`" in caplog.text and "choices" in caplog.text
        assert "HTTP 500" in caplog.text

        again = client(server.url).ask(subjects, pairs_per_subject=3, cache_dir=tmp_path, log=log)
        assert again.outcomes["cached"] == 2 and [p.question for p in again.pairs] == [p.question for p in batch.pairs]
        assert server.requests["centroid"] == 2 and server.requests["distance_to"] == 1  # never asked twice
        assert server.requests["perimeter"] == 2  # malformed replies are not cached
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_concurrency_limit(subjects, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, API_KEY)
    ok = [s for s in subjects if s.name == "distance_to"]
    many = [ok[0].model_copy(update={"name": f"sym{i}", "code": f"def sym{i}(): pass"}) for i in range(6)]
    with ChatServer(delay_s=0.2) as server:
        batch = client(server.url, concurrency=2).ask(
            many, pairs_per_subject=2, cache_dir=tmp_path, log=logging.getLogger()
        )
    assert batch.outcomes == {"answered": 6}
    assert server.max_in_flight == 2


def test_refused_key_is_a_clear_error(subjects, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "wrong")
    with ChatServer() as server, pytest.raises(QAEndpointError, match=f"refused the API key .*{KEY_ENV}"):
        client(server.url).ask(subjects, pairs_per_subject=2, cache_dir=tmp_path, log=logging.getLogger())


def test_unreachable_endpoint_is_a_clear_error(subjects, tmp_path):
    with ChatServer() as server:
        url = server.url  # a port that was just free and is closed once the server stops
    with pytest.raises(QAEndpointError, match="Every request to .* failed.*base_url"):
        client(url, timeout_s=2).ask(subjects, pairs_per_subject=2, cache_dir=tmp_path, log=logging.getLogger())


def test_examples_from_http_backend(upstream, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, API_KEY)
    with ChatServer() as server:
        examples, batch = qa_pairs(
            upstream.chunks,
            upstream.docs,
            client(server.url),
            max_subjects=100,
            pairs_per_subject=2,
            cache_dir=tmp_path,
            log=logging.getLogger(),
        )
    assert examples and all(e.task == "qa" for e in examples)
    assert "What is `load_settings` for?" in {e.instruction for e in examples}
    assert batch.outcomes["request_failed"] == 1


def test_retry_after_forms():
    assert retry_after_seconds("3") == 3.0 and retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < retry_after_seconds(later) <= 30
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_parse_pairs_accepts_fenced_json_and_lists():
    assert parse_pairs('```json\n{"pairs": [{"question": "Q?", "answer": "A."}]}\n```') == [("Q?", "A.")]
    assert parse_pairs('[{"question": "Q?", "answer": "A."}, {"question": "", "answer": "x"}]') == [("Q?", "A.")]
    with pytest.raises(MalformedReply, match="no pair"):
        parse_pairs('{"pairs": [{"q": "Q?"}]}')


@pytest.mark.slow  # a real model behind `mochi serve`
def test_the_llm_path_against_a_real_openai_compatible_server(subjects, tmp_path, monkeypatch, caplog):
    """`mochi serve` on a real GGUF (the tiny base) is the endpoint: every request reaches it with the configured
    model and key and comes back as an OpenAI chat completion; the tiny model writes no JSON, so each reply is
    reported as malformed (never as a failed request); a wrong key is refused by the server and named."""
    from mochi_pipeline.deployment.gguf_export import convert_hf_to_gguf
    from mochi_pipeline.deployment.server import ModelServer, create_app
    from mochi_pipeline.training.base_models import resolve_base
    from mochi_pipeline_tests.deployment.served_app import Running
    from mochi_pipeline_tests.training.store_project import TEST_TINY_STEPS

    gguf = convert_hf_to_gguf(Path(resolve_base("tiny", TEST_TINY_STEPS).path), tmp_path / "tiny.gguf", "f16")
    server = ModelServer(gguf, model_id="tiny", n_ctx=2048, parallel=2)
    monkeypatch.setenv(KEY_ENV, "sk-right")
    log = logging.getLogger("qa-real")
    try:
        with Running(create_app(server, api_key="sk-right")) as url, caplog.at_level(logging.WARNING, "qa-real"):
            qa = OpenAICompatibleQA(base_url=url, model="tiny", api_key_env=KEY_ENV, max_tokens=24, temperature=0.0)
            batch = qa.ask(subjects, pairs_per_subject=2, cache_dir=tmp_path / "cache", log=log)
            assert batch.outcomes == {"malformed_reply": len(subjects)} and not batch.pairs
            assert caplog.text.count("is malformed") == len(subjects) and "failed" not in caplog.text
            assert server.engine.stats["finished"] == len(subjects)  # each request was decoded by the real model
            monkeypatch.setenv(KEY_ENV, "sk-wrong")
            with pytest.raises(QAEndpointError, match=f"refused the API key.*{KEY_ENV}"):
                qa.ask(subjects[:1], pairs_per_subject=2, cache_dir=tmp_path / "cache", log=log)
    finally:
        server.close()
