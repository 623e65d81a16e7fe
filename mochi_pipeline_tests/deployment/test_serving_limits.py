"""What a shared server must hold to: an API key (create_app and `mochi serve`), prompts longer than the context."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import threading

import httpx
import openai
import pytest
from fastapi import APIRouter

from mochi_pipeline.deployment.server import ModelServer, create_app, serve
from mochi_pipeline_tests.cli_runner import mochi
from mochi_pipeline_tests.deployment.served_app import Running

pytestmark = pytest.mark.slow  # exports a model and starts servers (`mochi serve` among them)

KEY = "sk-test-7f3a9c1e5b"


@pytest.fixture(scope="module")
def tiny_server(exported):
    server = ModelServer(exported[1]["gguf_model"].file("f32").path, model_id="tiny", n_ctx=256, parallel=4)
    yield server
    server.close()


def _extra_router() -> APIRouter:
    router = APIRouter()

    @router.get("/extra/ping")
    def ping() -> dict:
        return {"pong": True}

    return router


# Every endpoint but /health, each with a body it would accept.
GUARDED = [
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/tiny", None),
    ("POST", "/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 1}),
    ("POST", "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                                      "max_tokens": 1}),
    ("POST", "/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 1}),
    ("POST", "/completion", {"prompt": "x", "n_predict": 1}),
    ("POST", "/completions", {"prompt": "x", "n_predict": 1}),
    ("POST", "/infill", {"input_prefix": "x", "n_predict": 1}),
    ("GET", "/extra/ping", None),
]


def test_api_key_is_required_everywhere_but_health_and_never_logged(tiny_server, caplog):
    app = create_app(tiny_server, api_key=KEY, routers=[_extra_router()])
    with caplog.at_level(logging.DEBUG), Running(app, log_level="debug", own_logging=False) as url:
        assert httpx.get(f"{url}/health").status_code == 200  # health checks need no key
        for method, path, body in GUARDED:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
                r = httpx.request(method, f"{url}{path}", json=body, headers=headers, timeout=60)
                error = r.json()["error"]
                assert r.status_code == 401 and error["code"] == "invalid_api_key", (path, headers, r.text)
                assert error["type"] == "invalid_request_error" and "MOCHI_API_KEY" in error["message"]
            r = httpx.request(method, f"{url}{path}", json=body, headers={"Authorization": f"Bearer {KEY}"},
                              timeout=60)
            assert r.status_code == 200, (path, r.text)
        with openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0) as bad, \
                pytest.raises(openai.AuthenticationError) as refused:
            bad.models.list()
        assert refused.value.code == "invalid_api_key"
        with openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0) as good:
            assert good.completions.create(model="tiny", prompt="def f():\n", max_tokens=3, temperature=0).usage
            chat = good.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=3, temperature=0)
            assert chat.choices[0].message.role == "assistant"
    server_log = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("uvicorn", "mochi")))
    assert '"POST /v1/completions HTTP/1.1" 401' in server_log  # uvicorn logged each request, refusals too
    assert "/v1/completions: 4 prompt + 3 generated tokens" in server_log  # and the server its summary of each
    assert KEY not in server_log and KEY not in caplog.text


def test_binding_beyond_loopback_without_a_key_warns(capsys):
    # The warning comes before anything loads: a missing model file then stops the call.
    with pytest.raises(FileNotFoundError):
        serve("/nonexistent.gguf", host="0.0.0.0", port=1)
    assert "without an API key" in capsys.readouterr().out
    for host, key in (("127.0.0.1", None), ("localhost", None), ("0.0.0.0", KEY)):
        with pytest.raises(FileNotFoundError):
            serve("/nonexistent.gguf", host=host, port=1, api_key=key)
        assert "without an API key" not in capsys.readouterr().out


def test_mochi_serve_takes_the_key_from_the_environment(exported, sample_repo, tmp_path):
    """`mochi serve` as a team would start it: the key in $TEAM_KEY (named by --api-key-env), port from the OS."""
    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    mochi(repo, "init")
    gguf = str(exported[1]["gguf_model"].file("q8_0").path)
    env = {k: v for k, v in os.environ.items() if k not in ("MOCHI_CONFIG", "DAGSTER_HOME", "MOCHI_API_KEY")}

    missing = subprocess.run([sys.executable, "-m", "mochi_pipeline.cli", "serve", "--model", gguf,
                              "--api-key-env", "TEAM_KEY"], cwd=repo, env=env, capture_output=True, text=True,
                             timeout=300)
    assert missing.returncode != 0 and "TEAM_KEY is not set" in missing.stderr

    proc = subprocess.Popen([sys.executable, "-m", "mochi_pipeline.cli", "serve", "--model", gguf, "--port", "0",
                             "--parallel", "2", "--api-key-env", "TEAM_KEY"], cwd=repo, env={**env, "TEAM_KEY": KEY},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "Uvicorn running on" in line:
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert started.wait(300), "".join(lines)
        port = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", "".join(lines)).group(1)
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/v1/models", timeout=60).status_code == 401
        with openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60) as client:
            assert [m.id for m in client.models.list()] == ["mochi"]  # export.name of the project's mochi.yaml
            assert client.completions.create(model="mochi", prompt="x = ", max_tokens=2).usage.completion_tokens >= 1
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        reader.join(timeout=10)
    output = "".join(lines)
    assert "2 parallel slots, API key required" in output and "GET /v1/models HTTP/1.1\" 401" in output
    assert KEY not in output


def test_a_prompt_longer_than_the_context_gets_context_length_exceeded(tiny_server):
    huge = "x = 1\n" * 170_000  # about 1 MB
    with Running(create_app(tiny_server)) as url:
        for path, body, param in (
            ("/v1/completions", {"model": "tiny", "prompt": huge}, "prompt"),
            ("/v1/completions", {"model": "tiny", "prompt": huge, "stream": True}, "prompt"),
            ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": huge}]}, "messages"),
            ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": huge}],
                                      "stream": True}, "messages"),
            ("/completion", {"prompt": huge, "stream": True}, "prompt"),
        ):
            r = httpx.post(f"{url}{path}", json=body, timeout=120)
            error = r.json()["error"]
            assert r.status_code == 400 and error["code"] == "context_length_exceeded", r.text
            assert error["type"] == "invalid_request_error" and error["param"] == param
            n_tokens = int(re.search(r"has (\d+) prompt tokens", error["message"]).group(1))
            assert n_tokens > 100_000 and "context of 256" in error["message"]
        # the edge: a prompt that leaves room for exactly one token fits, one more does not
        fits = tiny_server.tokenize("x = 1\n" * 200)[:255]  # as token ids, which OpenAI's API also takes
        r = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": fits, "max_tokens": 50}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["usage"] == {"prompt_tokens": 255, "completion_tokens": 1, "total_tokens": 256}
        assert r.json()["choices"][0]["finish_reason"] == "length"
        r = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": [*fits, fits[0]]}, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
        with openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120) as client:
            with pytest.raises(openai.BadRequestError) as err:
                client.completions.create(model="tiny", prompt=huge)
            assert err.value.code == "context_length_exceeded"
            with pytest.raises(openai.BadRequestError) as err:
                client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": huge}])
            assert err.value.code == "context_length_exceeded" and err.value.param == "messages"
        # /infill keeps the code nearest the cursor instead
        r = httpx.post(f"{url}/infill", json={"input_prefix": huge, "input_suffix": "\n", "n_predict": 4}, timeout=120)
        assert r.status_code == 200 and r.json()["tokens_evaluated"] <= 256 and r.json()["truncated"] is True
        assert r.json()["tokens_predicted"] >= 1
    assert tiny_server.engine.active == {}


def test_scoring_a_text_longer_than_the_context_is_refused(tiny_server):
    from mochi_pipeline.deployment.engine import ContextLengthError

    with pytest.raises(ContextLengthError, match="context of 256"):
        tiny_server.score("x = 1\n" * 100, "y = 2\n" * 100)


def test_fewer_than_one_parallel_slot_is_refused_with_the_reason(tiny_server, tmp_path):
    with pytest.raises(ValueError, match="parallel must be at least 1"):
        ModelServer(tiny_server.model_path, parallel=0)
    refused = mochi(tmp_path, "serve", "--parallel", "0", check=False)
    assert refused.returncode == 2 and "--parallel must be at least 1" in refused.stderr
