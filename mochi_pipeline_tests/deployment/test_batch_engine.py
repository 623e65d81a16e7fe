"""The batch engine behind `mochi serve`: requests decoded together give what each gives alone, per-request
sampling, stop strings, slots freed on disconnect, and scoring (against transformers)."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import httpx
import llama_cpp
import numpy as np
import pytest

from mochi_pipeline.deployment.engine import Sampling
from mochi_pipeline.deployment.server import ModelServer, create_app
from mochi_pipeline_tests.deployment.served_app import Running, sse_events

pytestmark = pytest.mark.slow  # real GGUF models in llama.cpp's batched engine and a server on loopback

PROMPTS = ["def add(a, b):\n", "import os\n", "class Stack:\n", "for i in range(10):\n", "# parse args\n",
           "x = [", "return ", "async def main():\n"]


def _sequential_greedy(server: ModelServer, prompt: str, n: int) -> str:
    """llama-cpp-python's own one-sequence greedy decode (top_k=1), on the model's own context."""
    tokens: list[int] = []
    vocab = llama_cpp.llama_model_get_vocab(server.llm.model)
    for token in server.llm.generate(server.tokenize(prompt), top_k=1, reset=True):
        if llama_cpp.llama_vocab_is_eog(vocab, token) or len(tokens) == n:
            break
        tokens.append(token)
    return server.llm.detokenize(tokens).decode("utf-8", errors="replace")


def _wait_idle(server: ModelServer, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while server.engine.active or not server.engine.waiting.empty():
        assert time.monotonic() < deadline, f"slots still busy: {list(server.engine.active)}"
        time.sleep(0.02)


def _kv_holds_only_prompts(server: ModelServer) -> bool:
    """Every free slot's cells hold the prompt it keeps for reuse and nothing more (no generated tokens)."""
    memory, engine = server.engine.ctx.memory, server.engine
    return all(llama_cpp.llama_memory_seq_pos_max(memory, s) == len(engine.cached.get(s, ())) - 1
               for s in range(engine.slots))


@pytest.mark.parametrize("which", ["base", "random"])
def test_concurrent_requests_get_what_each_would_get_alone(which, model, exported):
    """On the pre-trained tiny base and on the random tiny model; greedy also against llama.cpp's own decode."""
    server = model if which == "base" else ModelServer(exported[1]["gguf_model"].file("f32").path, n_ctx=256,
                                                       parallel=8)
    try:
        def one(prompt: str, seed: int | None = None, temperature: float = 0.0) -> str:
            return server.engine.complete(server.tokenize(prompt),
                                          Sampling(max_tokens=12, temperature=temperature, seed=seed)).text

        alone = [one(p) for p in PROMPTS]
        assert alone == [_sequential_greedy(server, p, 12) for p in PROMPTS]
        seeds = range(100, 100 + len(PROMPTS))
        sampled_alone = [one(p, seed, 0.9) for p, seed in zip(PROMPTS, seeds, strict=True)]
        server.engine.stats["most_sequences_in_a_decode"] = 0
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            together = list(pool.map(one, PROMPTS))
            sampled = list(pool.map(lambda p, seed: one(p, seed, 0.9), PROMPTS, seeds))
        assert together == alone  # greedy: batching changes nothing
        assert sampled == sampled_alone  # seeded sampling: reproducible whatever else runs
        assert len(set(sampled)) > 1  # eight different requests, not one answer copied
        assert 2 <= server.engine.stats["most_sequences_in_a_decode"] <= server.engine.slots
        _wait_idle(server)
        assert _kv_holds_only_prompts(server)
    finally:
        if server is not model:
            server.close()


def test_eight_http_clients_are_served_together(model):
    server = ModelServer(model.model_path, model_id="tiny", n_ctx=512, parallel=8)
    body = {"model": "tiny", "max_tokens": 16, "temperature": 0.8, "seed": 3}
    try:
        with Running(create_app(server)) as url, httpx.Client(base_url=url, timeout=120) as http:
            alone = [http.post("/v1/completions", json={**body, "prompt": p}).json() for p in PROMPTS]
            server.engine.stats["most_sequences_in_a_decode"] = 0
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                together = list(pool.map(
                    lambda p: httpx.post(f"{url}/v1/completions", json={**body, "prompt": p}, timeout=120).json(),
                    PROMPTS))
        assert [r["choices"][0]["text"] for r in together] == [r["choices"][0]["text"] for r in alone]
        assert [r["usage"] for r in together] == [r["usage"] for r in alone]
        assert server.engine.stats["most_sequences_in_a_decode"] >= 2
    finally:
        server.close()


def test_sampling_knobs(model):
    tokens = model.tokenize("def parse(text):\n")

    def text(**kw) -> str:
        return model.engine.complete(tokens, Sampling(max_tokens=16, **kw)).text

    greedy = text()
    for narrowed in ({"top_k": 1}, {"min_p": 1.0}, {"top_p": 1e-6}):  # each leaves only the most likely token
        assert text(temperature=1.0, seed=1, **narrowed) == greedy, narrowed
    assert text(temperature=1.0, seed=5) == text(temperature=1.0, seed=5)
    assert len({text(temperature=1.0, seed=s) for s in range(4)}) > 1
    assert len({text(temperature=1.0, seed=s, top_k=3) for s in range(4)}) > 1


def test_stop_strings_max_tokens_and_finish_reasons(model):
    with Running(create_app(model)) as url, httpx.Client(base_url=url, timeout=120) as http:
        base = {"model": "tiny", "prompt": "class Parser:\n", "temperature": 0.9, "seed": 11}
        full = http.post("/v1/completions", json={**base, "max_tokens": 24}).json()
        text = full["choices"][0]["text"]
        assert full["choices"][0]["finish_reason"] == "length" and full["usage"]["completion_tokens"] == 24
        stop = text[len(text) // 2: len(text) // 2 + 3]
        assert len(stop) == 3
        cut = http.post("/v1/completions", json={**base, "max_tokens": 24, "stop": [stop, "\u0000never"]}).json()
        assert cut["choices"][0]["text"] == text[: text.index(stop)]
        assert cut["choices"][0]["finish_reason"] == "stop"
        with http.stream("POST", "/v1/completions", json={**base, "max_tokens": 24, "stop": stop, "stream": True}) as r:
            events = sse_events(r.iter_lines())
        assert events[-1] == "[DONE]"
        assert "".join(e["choices"][0]["text"] for e in events[:-1]) == text[: text.index(stop)]
        assert events[-2]["choices"][0]["finish_reason"] == "stop"
        native = http.post("/completion", json={"prompt": base["prompt"], "temperature": 0.9, "seed": 11,
                                                "top_k": 0, "top_p": 1.0, "min_p": 0.0, "n_predict": 24,
                                                "stop": [stop]}).json()
        assert native["content"] == text[: text.index(stop)]
        assert native["stop_type"] == "word" and native["stopping_word"] == stop
        none = http.post("/v1/completions", json={**base, "max_tokens": 0}).json()
        assert none["choices"][0]["text"] == "" and none["usage"]["completion_tokens"] == 0


def test_a_client_that_goes_away_frees_its_slot(model):
    """Streaming or not, a request whose client disconnects stops being decoded (its KV cells are removed)."""
    server = ModelServer(model.model_path, model_id="tiny", n_ctx=8192, parallel=2)  # 8k tokens: seconds of work
    try:
        with Running(create_app(server)) as url:
            with httpx.stream("POST", f"{url}/v1/completions", timeout=60,
                              json={"model": "tiny", "prompt": "x", "max_tokens": -1, "stream": True}) as r:
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        break  # one piece read, then the connection closes
            _wait_idle(server)
            assert server.engine.stats["cancelled"] == 1 and server.engine.stats["finished"] == 0
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{url}/v1/chat/completions", timeout=httpx.Timeout(60, read=0.5),
                           json={"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1})
            _wait_idle(server)
            assert server.engine.stats["cancelled"] == 2 and server.engine.stats["finished"] == 0
            assert _kv_holds_only_prompts(server)
        pieces = iter(server.generate("x", Sampling(max_tokens=8000)))
        assert isinstance(next(pieces), str)
        pieces.close()  # a Python caller that stops iterating frees the slot too
        _wait_idle(server)
        assert server.engine.stats["cancelled"] == 3 and _kv_holds_only_prompts(server)
    finally:
        server.close()


@pytest.fixture(scope="module")
def random_f32(exported):
    server = ModelServer(exported[1]["gguf_model"].file("f32").path, model_id="tiny", n_ctx=256, parallel=4)
    yield server
    server.close()


def _hf_logprobs(model_dir: Path, head: list[int], tail: list[int]) -> list[float]:
    import torch
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([[*head, *tail]])
    with torch.no_grad():
        logprobs = torch.log_softmax(hf(ids).logits[0].double(), dim=-1)
    return [logprobs[i - 1, ids[0, i]].item() for i in range(len(head), ids.shape[1])]


@pytest.mark.parametrize(("prompt", "continuation"), [
    ("def add(a, b):\n", "    return a + b\n"),
    ("def f(", "x):"),  # a seam inside what would be one token if tokenized together
    ("", "import os\n"),  # empty prompt: the continuation follows BOS alone
])
def test_score_matches_transformers(random_f32, tiny_model, prompt, continuation):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model[0])
    head = tokenizer(prompt)["input_ids"] if prompt else []  # BOS only if the model wants one (StarCoder: no)
    assert random_f32.add_bos is False and (not prompt or head[0] != tokenizer.bos_token_id)
    head = head or [tokenizer.bos_token_id]
    tail = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    got = random_f32.score(prompt, continuation)
    assert [piece for piece, _ in got] == [tokenizer.decode([t]) for t in tail]  # exactly the continuation's tokens
    assert "".join(piece for piece, _ in got) == continuation
    expected = _hf_logprobs(tiny_model[0], head, tail)
    assert np.allclose([lp for _, lp in got], expected, atol=1e-3), (got, expected)
    assert all(lp < 0 for _, lp in got)


def test_score_many_is_each_score_decoded_together(random_f32):
    prompt = "def area(r):\n"
    candidates = ["    return 3.14 * r * r\n", "    pass\n", "    return r\n", "    raise ValueError(r)\n"]
    alone = [random_f32.score(prompt, c) for c in candidates]
    random_f32.engine.stats["most_sequences_in_a_decode"] = 0
    together = random_f32.score_many(prompt, candidates)
    assert random_f32.engine.stats["most_sequences_in_a_decode"] >= 2
    for a, t in zip(alone, together, strict=True):
        assert [p for p, _ in a] == [p for p, _ in t]
        assert np.allclose([lp for _, lp in a], [lp for _, lp in t], atol=1e-4)
    with pytest.raises(ValueError, match="continuation is empty"):
        random_f32.score(prompt, "")


def _llama_logprobs(path: Path, ids: list[int], tail: list[int], **extra) -> list[float]:
    """llama.cpp's own one-sequence evaluation of ``ids + tail``: the log-probability of each of ``tail``."""
    from mochi_pipeline.deployment.gguf_verify import load_llama

    reference = load_llama(path, n_ctx=len(ids) + len(tail) + 8, logits_all=True, **extra)
    try:
        reference.eval([*ids, *tail])
        logits = np.array(reference.scores[: len(ids) + len(tail)], dtype=np.float64)
    finally:
        reference.close()
    top = logits.max(1, keepdims=True)
    logprobs = logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))
    return [logprobs[len(ids) + i - 1, t] for i, t in enumerate(tail)]


def test_a_prompt_read_once_serves_every_candidate(random_f32):
    """Ranking candidates after one prompt reads the prompt once: later requests reuse the cells a finished one
    left in its slot, and score exactly what a fresh evaluation of the whole text scores."""
    prompt = "".join(f"def step_{i}(state):\n    return state + {i}\n\n" for i in range(6))
    candidates = ["def step_6(state):\n", "class Step:\n", "def step_6(s):\n", "import os\n"]
    head = random_f32.tokenize(prompt)
    got, reused = [], []
    for candidate in candidates:
        before = random_f32.engine.stats["prompt_tokens_reused"]
        got.append(random_f32.score(prompt, candidate))
        reused.append(random_f32.engine.stats["prompt_tokens_reused"] - before)
    # the first candidate reads the prompt (at most a word of it is left from earlier tests); the other three reuse
    # all of it but its last token, whose logits score their first token
    assert reused[0] < 5 and reused[1:] == [len(head) - 1] * 3
    for candidate, scores in zip(candidates, got, strict=True):
        tail = random_f32.tokenize(candidate, bos=False)
        expected = _llama_logprobs(random_f32.model_path, head, tail)
        assert np.allclose([lp for _, lp in scores], expected, atol=1e-3), candidate
    _wait_idle(random_f32)
    assert _kv_holds_only_prompts(random_f32)


def test_a_lora_adapter_is_applied_in_the_batch_context(lora_exported):
    """`serve(lora_path=...)`: the engine's own context carries the adapter, as llama.cpp's Llama does."""

    _, values = lora_exported
    lora = values["gguf_lora_adapter"]
    prompt, continuation = "def add(a, b):\n", "    return a + b\n"
    scores = {}
    for name, extra in (("base", {}), ("lora", {"lora_path": lora.path})):
        server = ModelServer(lora.base_gguf_path, n_ctx=64, parallel=2, **extra)
        try:
            scores[name] = [lp for _, lp in server.score(prompt, continuation)]
            ids = server.tokenize(prompt, bos=False)
            tail = server.tokenize(continuation, bos=False)
        finally:
            server.close()
        expected = _llama_logprobs(Path(lora.base_gguf_path), ids, tail, **extra)
        assert np.allclose(scores[name], expected, atol=1e-3), name
    assert not np.allclose(scores["base"], scores["lora"], atol=1e-3)  # the adapter changes the model
