"""The OpenAI-compatible server on a real GGUF, driven by the official `openai` client and httpx."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from mochi_pipeline.deployment.server import ChatMessage, InfillRequest, ModelServer, create_app
from mochi_pipeline_tests.deployment.served_app import Running

pytestmark = pytest.mark.slow  # a real GGUF model behind a server on loopback


@pytest.fixture(scope="module")
def model_server(exported):
    server = ModelServer(Path(exported[1]["gguf_model"].file("q8_0").path), model_id="tiny")
    yield server
    server.close()


@pytest.fixture(scope="module")
def base_url(model_server):
    with Running(create_app(model_server)) as url:
        yield url


@pytest.fixture
def client(base_url):
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="not-needed", max_retries=0, timeout=60) as c:
        yield c


def test_models_list(client):
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert client.models.retrieve("tiny").owned_by == "mochi"


def test_completion_is_deterministic_at_temperature_zero(client, model_server):
    kwargs = dict(model="tiny", prompt="def add(a, b):\n", max_tokens=8, temperature=0)
    first, second = client.completions.create(**kwargs), client.completions.create(**kwargs)
    assert first.choices[0].text == second.choices[0].text
    assert first.usage.prompt_tokens == len(model_server.llm.tokenize(b"def add(a, b):\n", add_bos=False))
    assert 1 <= first.usage.completion_tokens <= 8
    assert first.choices[0].finish_reason in {"stop", "length"}


def test_streamed_completion_equals_the_plain_one(client):
    kwargs = dict(model="tiny", prompt="import os\n", max_tokens=10, temperature=0)
    plain = client.completions.create(**kwargs).choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(stream=True, **kwargs))
    assert streamed == plain


def test_chat_completion_plain_and_streamed(client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a sorting algorithm."}]
    plain = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0)
    assert plain.object == "chat.completion" and plain.choices[0].message.role == "assistant"
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0,
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == plain.choices[0].message.content


def test_chat_prompt_uses_the_models_template(model_server):
    prompt = model_server.chat_prompt([ChatMessage(role="user", content="hi")])
    assert prompt == "### Instruction\nhi\n\n### Response\n"
    assert model_server.chat_stops == ["<|endoftext|>"]


def test_stream_ends_with_done(base_url):
    body = {"model": "tiny", "prompt": "x = ", "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{base_url}/v1/completions", json=body, timeout=60) as r:
        lines = [ln for ln in r.iter_lines() if ln]
    assert r.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]" and all(ln.startswith("data: ") for ln in lines)


def test_infill_llama_vscode_wire_format(base_url, model_server, tiny_model):
    body = {"input_prefix": "def add(a, b):\n    ", "input_suffix": "\n    return c\n", "prompt": "c = ",
            "input_extra": [{"filename": "util.py", "text": "def sub(a, b):\n    return a - b\n"}],
            "n_predict": 6, "temperature": 0, "samplers": ["top_k"], "cache_prompt": True, "t_max_predict_ms": 500}
    r = httpx.post(f"{base_url}/infill", json=body, timeout=60)
    assert r.status_code == 200
    data = r.json()
    assert isinstance(data["content"], str) and 1 <= data["tokens_predicted"] <= 6
    # llama.cpp server's format_infill for a vocabulary without repo and file-separator tokens (StarCoder's, no
    # BOS): each extra chunk after a snippet line, then <fim_prefix> prefix+prompt <fim_suffix> suffix <fim_middle>.
    # Counted here with the transformers tokenizer of the exported model, not with the server's own code.
    hf = AutoTokenizer.from_pretrained(tiny_model[0])
    pieces = ["\n\n--- snippet ---\n\n", "def sub(a, b):\n    return a - b\n", "<fim_prefix>", "def add(a, b):\n    ",
              "c = ", "<fim_suffix>", "\n    return c\n", "<fim_middle>"]
    expected = [i for piece in pieces for i in hf(piece, add_special_tokens=False)["input_ids"]]
    assert data["tokens_evaluated"] == len(expected)
    tokens = model_server.infill_tokens(InfillRequest(**body))
    assert tokens == expected
    fim = model_server.fim
    # extra context, then <fim_prefix> prefix+prompt <fim_suffix> suffix <fim_middle>
    assert tokens[-1] == fim["mid"] and tokens.index(fim["pre"]) < tokens.index(fim["suf"])
    text = model_server.llm.detokenize(tokens, special=True).decode()
    assert text.index("def sub") < text.index("<fim_prefix>def add(a, b):\n    c = <fim_suffix>\n    return c\n")


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/v1/chat/completions", {"model": "tiny", "messages": []}, 400, "messages"),
        ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
        ("/v1/completions", {"model": "tiny", "prompt": "x", "temperature": 5}, 400, "temperature"),
        ("/v1/completions", {"model": "tiny"}, 400, "prompt"),
        ("/v1/completions", {"model": "gpt-4", "prompt": "x"}, 404, "does not exist"),
        ("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404, "nope"),
        ("/infill", {"input_prefix": "x", "n_predict": "many"}, 400, "n_predict"),
        # One choice per request: n > 1 is refused, not answered with a single choice.
        ("/v1/completions", {"model": "tiny", "prompt": "x", "n": 2}, 400, "n"),
        ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 3}, 400, "n"),
    ],
)
def test_malformed_requests_get_4xx_with_a_reason(base_url, path, body, status, needle):
    r = httpx.post(f"{base_url}{path}", json=body, timeout=30)
    assert r.status_code == status
    assert needle in r.json()["error"]["message"]


def test_invalid_json_and_openai_client_errors(base_url, client):
    r = httpx.post(f"{base_url}/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="other", prompt="x")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[])


def test_health_answers_without_a_key_while_the_api_wants_one(model_server):
    with Running(create_app(model_server, api_key="health-test-key")) as url:
        assert httpx.get(f"{url}/health", timeout=30).json() == {"status": "ok"}
        assert httpx.get(f"{url}/v1/models", timeout=30).status_code == 401
        authorized = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer health-test-key"}, timeout=30)
        assert [m["id"] for m in authorized.json()["data"]] == ["tiny"]
