"""The requests editor extensions really send, against `mochi serve`'s app with an API key (a team's set-up).

Request bodies are those of the extensions' sources: Continue's ``core/llm/openaiTypeConverters.ts``
(``toChatBody``, ``toCompleteBody``), ``packages/openai-adapters/src/apis/OpenAI.ts`` (``modifyChatBody`` adds
``stream_options``) and ``core/llm/llms/LlamaCpp.ts`` (native ``/completion``; chat on ``v1/chat/completions``);
llama.vscode's ``src/llama-server.ts`` (``createRequestPayload`` for ``/infill``, ``createChatRequestPayload`` and
``createChatEditRequestPayload`` for ``/v1/chat/completions``, headers from ``src/configuration.ts``).
JSON.stringify drops the fields an extension leaves undefined, so they are absent here too.
"""

from __future__ import annotations

import httpx
import pytest

from mochi_pipeline.deployment.server import InfillRequest, ModelServer, create_app
from mochi_pipeline_tests.deployment.served_app import Running, sse_events

pytestmark = pytest.mark.slow  # a real GGUF model behind a server on loopback

KEY = "team-key-41d0"
PREFIX = "def fibonacci(n):\n    if n < 2:\n        return n\n    "
SUFFIX = "\n\nprint(fibonacci(10))\n"
# Continue's stop words for its default autocomplete template (core/autocomplete/templating/AutocompleteTemplate.ts)
CONTINUE_FIM_STOPS = ["<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<file_sep>", "<|endoftext|>", "</fim_middle>",
                      "</code>"]


@pytest.fixture(scope="module")
def server(exported):
    server = ModelServer(exported[1]["gguf_model"].file("f32").path, model_id="mochi", n_ctx=512, parallel=4)
    yield server
    server.close()


@pytest.fixture(scope="module")
def http(server):
    with Running(create_app(server, api_key=KEY)) as url, httpx.Client(base_url=url, timeout=120) as client:
        yield client


def continue_headers() -> dict:
    return {"Content-Type": "application/json", "Accept": "application/json", "x-api-key": KEY,
            "Authorization": f"Bearer {KEY}"}


def llama_vscode_headers() -> dict:  # axiosRequestConfigCompl / axiosRequestConfigChat with an api_key set
    return {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


def stream_events(http: httpx.Client, path: str, body: dict, headers: dict) -> list:
    with http.stream("POST", path, json=body, headers=headers) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        return sse_events(r.iter_lines())


def test_continue_fim_template_is_the_models_own_fim_prompt(server):
    """Continue writes the autocomplete prompt itself; mochi serve prints the template for the model's FIM tokens."""
    template = server.fim_template()
    assert template == "<fim_prefix>{{{prefix}}}<fim_suffix>{{{suffix}}}<fim_middle>"  # Continue's default one
    prompt = template.replace("{{{prefix}}}", PREFIX).replace("{{{suffix}}}", SUFFIX)
    assert server.tokenize(prompt) == server.infill_tokens(InfillRequest(input_prefix=PREFIX, input_suffix=SUFFIX))


def test_continue_openai_provider_chat(http):
    body = {"messages": [{"role": "system", "content": "You are a helpful coding assistant."},
                         {"role": "user", "content": "What does fibonacci(10) return?"}],
            "model": "mochi", "max_tokens": 24, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    events = stream_events(http, "/v1/chat/completions", body, continue_headers())
    assert events[-1] == "[DONE]"
    chunks, usage = events[:-2], events[-2]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] >= 1  # the include_usage chunk
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    plain = http.post("/v1/chat/completions", json={**body, "stream": False}, headers=continue_headers()).json()
    assert streamed == plain["choices"][0]["message"]["content"]
    assert usage["usage"] == plain["usage"]
    assert chunks[-1]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]


def test_continue_openai_provider_autocomplete(http, server):
    """Autocomplete through provider openai: /v1/completions with Continue's FIM prompt, streamed."""
    prompt = server.fim_template().replace("{{{prefix}}}", PREFIX).replace("{{{suffix}}}", SUFFIX)
    body = {"prompt": prompt, "model": "mochi", "max_tokens": 16, "temperature": 0, "stream": True,
            "stop": CONTINUE_FIM_STOPS}
    events = stream_events(http, "/v1/completions", body, continue_headers())
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["text"] for e in events[:-1])
    infill = http.post("/infill", json={"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 16},
                       headers=llama_vscode_headers()).json()
    assert text == infill["content"] and events[-2]["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize("path", ["/completion", "/completions"])  # Continue's llama.cpp provider, by version
def test_continue_llama_cpp_provider_autocomplete(http, server, path):
    prompt = server.fim_template().replace("{{{prefix}}}", PREFIX).replace("{{{suffix}}}", SUFFIX)
    body = {"model": "mochi", "prompt": prompt, "stream": True, "n_predict": 16, "stop": CONTINUE_FIM_STOPS,
            "temperature": 0}
    events = stream_events(http, path, body, continue_headers())
    pieces, last = events[:-1], events[-1]
    assert all(e["stop"] is False for e in pieces) and last["stop"] is True
    assert last["stop_type"] in ("eos", "limit", "word") and last["tokens_predicted"] <= 16
    assert last["timings"]["predicted_n"] == last["tokens_predicted"]
    text = "".join(e["content"] for e in pieces)
    plain = http.post(path, json={**body, "stream": False}, headers=continue_headers()).json()
    assert text == plain["content"] and plain["stop"] is True
    infill = http.post("/infill", json={"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 16},
                       headers=llama_vscode_headers()).json()
    assert text == infill["content"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/chat/completions"])
def test_continue_llama_cpp_provider_chat(http, path):
    """Its own _streamChat posts to v1/chat/completions without a model; via openai-adapters, chat/completions."""
    body = {"messages": [{"role": "user", "content": "Write a haiku about recursion."}], "temperature": 0.7,
            "top_p": 0.9, "top_k": 40, "max_tokens": 12, "stream": True}
    events = stream_events(http, path, body, continue_headers())
    assert events[-1] == "[DONE]"
    assert events[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all(e["model"] == "mochi" for e in events[:-1])


def test_llama_vscode_infill(http, server):
    chunks = [{"text": "def lucas(n):\n    return 2 if n == 0 else 1\n", "time": 1733300000000,
               "filename": "seq.py"}]
    warm_up = {"input_prefix": "", "input_suffix": "", "input_extra": chunks, "prompt": "", "n_predict": 0,
               "samplers": [], "cache_prompt": True, "t_max_prompt_ms": 500, "t_max_predict_ms": 1}
    r = http.post("/infill", json=warm_up, headers=llama_vscode_headers())
    assert r.status_code == 200 and r.json()["content"] == "" and r.json()["tokens_predicted"] == 0
    body = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "input_extra": chunks, "prompt": "    ",
            "n_predict": 128, "top_k": 40, "top_p": 0.99, "stream": False, "samplers": ["top_k", "top_p", "infill"],
            "cache_prompt": True, "n_indent": 4, "t_max_prompt_ms": 500, "t_max_predict_ms": 500}
    r = http.post("/infill", json=body, headers=llama_vscode_headers())
    assert r.status_code == 200, r.text
    data = r.json()
    assert isinstance(data["content"], str) and 1 <= data["tokens_predicted"] <= 128
    assert data["truncated"] is False and data["tokens_cached"] == 0
    timings = data["timings"]  # what llama.vscode's status bar shows
    # The same count in both places; that count is checked against transformers' tokenizer (not the server's own
    # code) in test_openai_server.py's infill test.
    assert timings["prompt_n"] == data["tokens_evaluated"] > 0
    assert timings["predicted_n"] == data["tokens_predicted"] and timings["predicted_ms"] >= 0
    assert http.post("/infill", json=body, headers=llama_vscode_headers()).json()["content"] == data["content"]
    assert http.post("/infill", json=body).status_code == 401  # api_key left empty in llama.vscode


def test_llama_vscode_chat(http, server):
    messages = [{"role": "system", "content": "You are an expert coder."},
                {"role": "user", "content": "Explain recursion in one sentence."}]
    chat = {"messages": messages, "stream": False, "temperature": 0.8, "model": "mochi"}  # ai_model = "mochi"
    r = http.post("/v1/chat/completions", json=chat, headers=llama_vscode_headers())
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["choices"][0]["message"]["content"], str)
    no_model = {k: v for k, v in chat.items() if k != "model"}  # ai_model = ""
    assert http.post("/v1/chat/completions", json=no_model, headers=llama_vscode_headers()).status_code == 200
    default = {**chat, "model": "google/gemini-2.5-flash"}  # llama.vscode's default ai_model
    r = http.post("/v1/chat/completions", json=default, headers=llama_vscode_headers())
    assert r.status_code == 404 and "'mochi'" in r.json()["error"]["message"]
    edit = {"messages": [messages[0], {"role": "user", "content": "Modify the following original code according "
                                       "to the instructions.\n\ninstructions:\nadd a docstring\n\noriginal code:\n"
                                       + PREFIX + "\n\nmodified code:"}],
            "stream": False, "cache_prompt": True, "samplers": "edkypmxt", "temperature": 0.8, "dynatemp_range": 0,
            "dynatemp_exponent": 1, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "typical_p": 1, "xtc_probability": 0,
            "xtc_threshold": 0.1, "repeat_last_n": 64, "repeat_penalty": 1, "presence_penalty": 0,
            "frequency_penalty": 0, "dry_multiplier": 0, "dry_base": 1.75, "dry_allowed_length": 2,
            "dry_penalty_last_n": -1, "max_tokens": -1, "timings_per_token": False, "model": "mochi"}
    r = http.post("/v1/chat/completions", json=edit, headers=llama_vscode_headers())
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]  # max_tokens -1: until the end of generation or of the context
    assert usage["total_tokens"] <= server.n_ctx()
    assert r.json()["choices"][0]["finish_reason"] == ("length" if usage["total_tokens"] == server.n_ctx() else "stop")


def test_message_content_as_text_parts(http):
    """OpenAI's content-part form (text only) is read as the joined text; other parts are refused with the reason."""
    parts = [{"role": "user", "content": [{"type": "text", "text": "Say "}, {"type": "text", "text": "hi"}]}]
    joined = [{"role": "user", "content": "Say hi"}]
    a, b = (http.post("/v1/chat/completions", json={"messages": m, "max_tokens": 6, "temperature": 0},
                      headers=continue_headers()).json() for m in (parts, joined))
    assert a["choices"] == b["choices"] and a["usage"] == b["usage"]
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]
    r = http.post("/v1/chat/completions", json={"messages": image}, headers=continue_headers())
    assert r.status_code == 400 and "only text content" in r.json()["error"]["message"]
