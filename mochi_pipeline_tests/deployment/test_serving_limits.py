"""What a shared server must hold to: an API key, prompts longer than the context, concurrent requests."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time

import httpx
import openai
import pytest
import uvicorn

from mochi_pipeline.deployment.engine import Sampling
from mochi_pipeline.deployment.server import ModelServer, create_app, serve

KEY = "sk-test-7f3a9c1e5b"


class _Running:
    """uvicorn on 127.0.0.1, port chosen by the OS, in a thread."""

    def __init__(self, app) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="info"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def tiny_server(exported):
    server = ModelServer(exported[1]["gguf_model"].file("f32").path, model_id="tiny", n_ctx=256, parallel=4)
    yield server
    server.close()


def test_api_key_is_required_and_never_logged(tiny_server, caplog):
    with caplog.at_level(logging.DEBUG), _Running(create_app(tiny_server, api_key=KEY)) as url:
        assert httpx.get(f"{url}/health").status_code == 200  # health checks need no key
        r = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "x"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        with openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0) as bad, \
                pytest.raises(openai.AuthenticationError):
            bad.models.list()
        with openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0) as good:
            assert good.completions.create(model="tiny", prompt="def f():\n", max_tokens=3, temperature=0).usage
    assert KEY not in caplog.text and caplog.text  # the server did log its requests, never the key


def test_binding_beyond_loopback_without_a_key_warns(exported, capsys):
    # The warning comes before anything loads: a missing model file then stops the call.
    with pytest.raises(FileNotFoundError):
        serve("/nonexistent.gguf", host="0.0.0.0", port=1)
    assert "without an API key" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError):
        serve("/nonexistent.gguf", host="127.0.0.1", port=1)
    assert "without an API key" not in capsys.readouterr().out


def test_a_prompt_longer_than_the_context_gets_context_length_exceeded(tiny_server):
    huge = "x = 1\n" * 170_000  # about 1 MB
    with _Running(create_app(tiny_server)) as url:
        for path, body in (("/v1/completions", {"model": "tiny", "prompt": huge}),
                           ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": huge}]})):
            r = httpx.post(f"{url}{path}", json=body, timeout=120)
            error = r.json()["error"]
            assert r.status_code == 400 and error["code"] == "context_length_exceeded", r.text
            assert "256 tokens" in error["message"] and error["param"] in ("prompt", "messages")
        with openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120) as client, \
                pytest.raises(openai.BadRequestError) as err:
            client.completions.create(model="tiny", prompt=huge)
        assert err.value.code == "context_length_exceeded"
        # /infill keeps the code nearest the cursor instead
        r = httpx.post(f"{url}/infill", json={"input_prefix": huge, "input_suffix": "\n", "n_predict": 4}, timeout=120)
        assert r.status_code == 200 and r.json()["tokens_evaluated"] <= 256


def test_concurrent_requests_get_what_each_would_get_alone(model):
    """On the pre-trained tiny base: a random model's near-equal logits would let float noise pick the argmax."""
    prompts = ["def add(a, b):\n", "import os\n", "class Stack:\n", "for i in range(10):\n", "# parse args\n",
               "x = [", "return ", "async def main():\n"]

    def one(prompt: str, seed: int | None = None, temperature: float = 0.0) -> str:
        return model.engine.complete(model.tokenize(prompt),
                                     Sampling(max_tokens=12, temperature=temperature, seed=seed)).text

    alone = [one(p) for p in prompts]
    sampled_alone = [one(p, seed=7, temperature=0.9) for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        together = list(pool.map(one, prompts))
        sampled = list(pool.map(lambda p: one(p, 7, 0.9), prompts))
    assert together == alone  # greedy: batching changes nothing
    assert sampled == sampled_alone  # seeded sampling: reproducible whatever else runs
    assert len(set(sampled)) > 1  # eight different requests, not one answer copied


def test_score_matches_transformers(tiny_server, tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = tiny_model[0]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompt, continuation = "def add(a, b):\n", "    return a + b\n"
    got = tiny_server.score(prompt, continuation)
    head = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    tail = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[tokenizer.bos_token_id, *head, *tail]])
    with torch.no_grad():
        logprobs = torch.log_softmax(hf(ids).logits[0], dim=-1)
    expected = [logprobs[i - 1, ids[0, i]].item() for i in range(1 + len(head), ids.shape[1])]
    assert "".join(t for t, _ in got) == continuation
    assert [round(lp, 3) for _, lp in got] == pytest.approx([round(e, 3) for e in expected], abs=2e-3)
