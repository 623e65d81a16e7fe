"""HTTP server for a GGUF model in llama.cpp: OpenAI's API, llama.cpp's native API, editors' requests.

Endpoints: ``GET /v1/models``, ``POST /v1/completions`` and ``POST /v1/chat/completions`` (also at
``/chat/completions``), both with ``stream: true`` as server-sent events ending in ``data: [DONE]``
(and a usage chunk with ``stream_options.include_usage``); llama.cpp's own ``POST /completion``
(also at ``/completions``, streamed or not) and ``POST /infill``, which Continue's llama.cpp
provider and llama.vscode send; ``GET /health``. Chat prompts are rendered with the model's own chat
template (stored in the GGUF), so a served model sees the same text it was fine-tuned on.

Requests are decoded together in parallel slots of one llama.cpp context (engine.py); a client
that disconnects frees its slot. With an API key (``MOCHI_API_KEY``, like llama.cpp's and vLLM's
``--api-key``) every endpoint but ``/health`` wants ``Authorization: Bearer <key>`` (401 in OpenAI's
error shape otherwise; the key is never logged). A prompt that does not fit the context gets
OpenAI's 400 ``context_length_exceeded``; ``/infill`` instead keeps the code nearest the cursor.
More routes (the assist endpoints) join through ``create_app(routers=...)``, behind the same key.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from mochi_pipeline.deployment.chat_template import ChatTemplateError, parse_chat_template, render_jinja
from mochi_pipeline.deployment.engine import (
    BatchEngine,
    ContextLengthError,
    EngineClosed,
    Generation,
    Sampling,
    Stream,
)
from mochi_pipeline.deployment.gguf_metadata import read_chat_info
from mochi_pipeline.deployment.gguf_verify import load_llama

API_KEY_ENV = "MOCHI_API_KEY"
log = logging.getLogger("mochi.server")


# --- request bodies ---------------------------------------------------------------------------


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields we do not use (user, frequency_penalty, ...)

    model: str | None = Field(None, description="Optional (llama.cpp's server ignores it); another name is a 404.")
    max_tokens: int | None = Field(None, ge=-1, description="-1: until the context is full (llama.cpp's n_predict).")
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=-1, description="vLLM's and llama.cpp's extension; 0 or -1: off.")
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=1, description="Only one choice per request is supported.")

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class CompletionRequest(_Request):
    prompt: str | list[str] | list[int] = Field(min_length=1)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str] | list[int]) -> str | list[int]:
        if isinstance(v, list) and v and isinstance(v[0], str):
            if len(v) != 1:
                raise ValueError("only one prompt per request is supported")
            v = v[0]
        if isinstance(v, str) and not v:
            raise ValueError("the prompt is empty")
        return v


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = ""

    @field_validator("role")
    @classmethod
    def _developer_is_system(cls, v: str) -> str:
        return "system" if v == "developer" else v  # OpenAI's newer name for the system turn

    @field_validator("content")
    @classmethod
    def _text_only(cls, v: str | list[ContentPart] | None) -> str:
        if v is None or isinstance(v, str):
            return v or ""
        other = sorted({p.type for p in v if p.type != "text"})
        if other:
            raise ValueError(f"only text content is supported (got {', '.join(other)})")
        return "".join(p.text or "" for p in v)


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=-1)


class NativeCompletionRequest(BaseModel):
    """llama.cpp server ``/completion`` (Continue's llama.cpp provider): its field names and defaults."""

    model_config = ConfigDict(extra="ignore")  # model, min_keep, repeat_penalty, mirostat, cache_prompt, ...

    prompt: str | list[int]
    n_predict: int = Field(-1, ge=-1)
    temperature: float = Field(0.8, ge=0.0, le=5.0)
    top_k: int = Field(40, ge=-1)
    top_p: float = Field(0.95, ge=0.0, le=1.0)
    min_p: float = Field(0.05, ge=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list)
    stream: bool = False
    seed: int = Field(-1, description="-1: random.")


class InputExtra(BaseModel):
    model_config = ConfigDict(extra="ignore")  # llama.vscode adds "time"

    filename: str = "tmp"
    text: str = ""


class InfillRequest(BaseModel):
    """llama.cpp server ``/infill`` request (llama.vscode): code before/after the cursor plus context chunks."""

    model_config = ConfigDict(extra="ignore")  # samplers, t_max_*_ms, cache_prompt, n_indent, lora, ...

    input_prefix: str = ""
    input_suffix: str = ""
    input_extra: list[InputExtra] = Field(default_factory=list)
    prompt: str = ""
    n_predict: int = Field(64, ge=-1, description="0: only read the context (llama.vscode's warm-up); -1: no limit.")
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_k: int = Field(40, ge=-1)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    seed: int | None = None


# --- the model ----------------------------------------------------------------------------------


class ModelServer:
    """One loaded GGUF model, its batch engine, and what is needed to prompt it."""

    def __init__(self, model_path: str | Path, model_id: str | None = None, n_ctx: int = 0,
                 lora_path: str | Path | None = None, n_threads: int | None = None, parallel: int = 4):
        import llama_cpp

        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"No GGUF model at {self.model_path}; export one first (gguf_model asset).")
        if parallel < 1:
            raise ValueError(f"parallel must be at least 1 (got {parallel}): it is how many requests decode together.")
        self.model_id = model_id or self.model_path.stem
        self.created = int(time.time())
        extra: dict[str, Any] = {"lora_path": str(lora_path)} if lora_path else {}
        if n_threads:
            extra["n_threads"] = extra["n_threads_batch"] = n_threads
        # This context only tokenizes and holds the weights; decoding runs in the engine's own context.
        self.llm = load_llama(self.model_path, n_ctx=n_ctx, **extra)
        self.engine = BatchEngine(self.llm, slots=parallel, n_ctx=self.llm.n_ctx())
        info = read_chat_info(self.model_path)
        self.chat_template, self.bos, self.eos = info.chat_template, info.bos_token or "", info.eos_token or ""
        try:
            wrappers = parse_chat_template(self.chat_template, self.bos, self.eos) if self.chat_template else None
        except ChatTemplateError:
            wrappers = None  # the Jinja template still renders prompts; only the turn-end stop string is unknown
        self.chat_stops = wrappers.stop_strings if wrappers else []
        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        self.fim = {
            name: tok for name, fn in (("pre", llama_cpp.llama_vocab_fim_pre), ("suf", llama_cpp.llama_vocab_fim_suf),
                                       ("mid", llama_cpp.llama_vocab_fim_mid), ("rep", llama_cpp.llama_vocab_fim_rep),
                                       ("sep", llama_cpp.llama_vocab_fim_sep))
            if (tok := fn(vocab)) >= 0
        }
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))

    def close(self) -> None:
        self.engine.close()
        self.llm.close()

    def n_ctx(self) -> int:
        return self.engine.n_ctx

    def tokenize(self, text: str, bos: bool = True) -> list[int]:
        """Token ids as llama.cpp's own completion reads a prompt (special tokens parsed, BOS if the model wants)."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=bos, special=True) if text else (
            [self.llm.token_bos()] if bos and self.add_bos else [])

    def prompt_tokens(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenize(prompt)
        bad = [t for t in prompt if not 0 <= t < self.n_vocab]
        if bad:
            raise ValueError(f"token ids must be in [0, {self.n_vocab}); got {bad[:5]}")
        return list(prompt)

    def generate(self, prompt: str | list[int], sampling: Sampling) -> Stream:
        """Text pieces as they are decoded, then one ``Generation`` (iterate it; closing it frees the slot)."""
        return self.engine.submit(self.prompt_tokens(prompt), sampling)

    def complete(self, prompt: str, max_tokens: int = 64, stop: Sequence[str] = ()) -> str:
        """Greedy continuation of ``prompt`` (raises ContextLengthError when it does not fit)."""
        return self.engine.complete(self.tokenize(prompt), Sampling(max_tokens=max_tokens, stop=list(stop))).text

    def infill(self, prefix: str, suffix: str, max_tokens: int = 64) -> str:
        """The code between ``prefix`` and ``suffix``, prompted with the model's FIM tokens as /infill does."""
        tokens = self.infill_tokens(InfillRequest(input_prefix=prefix, input_suffix=suffix, n_predict=max_tokens))
        return self.engine.complete(tokens, Sampling(max_tokens=max_tokens)).text

    def _score_tokens(self, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
        head = self.tokenize(prompt, bos=False)
        if self.add_bos or not head:  # an empty prompt: the continuation follows BOS alone
            bos = self.llm.token_bos()
            if bos < 0:
                raise ValueError(f"Model {self.model_id} has no BOS token: score needs a non-empty prompt.")
            head = [bos, *head]
        tail = self.tokenize(continuation, bos=False)
        if not tail:
            raise ValueError("Nothing to score: the continuation is empty.")
        return head, tail

    def _pieces(self, tail: list[int], logprobs: list[float]) -> list[tuple[str, float]]:
        return [(self.llm.detokenize([t], special=True).decode("utf-8", errors="replace"), lp)
                for t, lp in zip(tail, logprobs, strict=True)]

    def score(self, prompt: str, continuation: str) -> list[tuple[str, float]]:
        """(token text, natural-log probability) of each token of ``continuation`` after ``prompt``.

        Prompt and continuation are tokenized apart and their ids joined, so the seam between them is exact;
        BOS comes first when the model wants one, and always before an empty prompt.
        """
        return self.score_many(prompt, [continuation])[0]

    def score_many(self, prompt: str, continuations: Sequence[str]) -> list[list[tuple[str, float]]]:
        """``score`` of each continuation after the same prompt, all submitted at once (decoded together)."""
        parts = [self._score_tokens(prompt, c) for c in continuations]
        streams = [self.engine.submit_score(head + tail, len(head)) for head, tail in parts]
        return [self._pieces(tail, s.result()) for (_, tail), s in zip(parts, streams, strict=True)]

    def chat_prompt(self, messages: Sequence[ChatMessage | dict[str, str]]) -> str:
        if not self.chat_template:
            raise ValueError(f"Model {self.model_id} has no chat template; use /v1/completions instead.")
        plain = [m.model_dump() if isinstance(m, ChatMessage) else dict(m) for m in messages]
        text = render_jinja(self.chat_template, plain, True, self.bos, self.eos)
        # llama.cpp adds BOS itself when the model wants one
        return text[len(self.bos):] if self.bos and text.startswith(self.bos) else text

    def fim_template(self) -> str | None:
        """The fill-in-the-middle prompt in Continue's template syntax (its ``promptTemplates.autocomplete``),
        spelled with this model's own FIM tokens; None without them."""
        if not {"pre", "suf", "mid"} <= self.fim.keys():
            return None
        text = {k: self.llm.detokenize([t], special=True).decode("utf-8") for k, t in self.fim.items()}
        return f"{text['pre']}{{{{{{prefix}}}}}}{text['suf']}{{{{{{suffix}}}}}}{text['mid']}"

    def infill_tokens(self, req: InfillRequest) -> list[int]:
        return self.infill_prompt(req)[0]

    def infill_prompt(self, req: InfillRequest) -> tuple[list[int], bool]:
        """Prompt tokens laid out like llama.cpp's server ``format_infill`` (PSM order), and whether any
        context had to be cut to fit."""
        missing = {"pre", "suf", "mid"} - self.fim.keys()
        if missing:
            raise ValueError(f"Model {self.model_id} has no fill-in-the-middle tokens ({sorted(missing)} missing); "
                             "use /v1/completions or /completion with a prompt instead.")

        def tok(text: str) -> list[int]:
            return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) if text else []

        extra: list[int] = []
        if "rep" in self.fim:
            extra += [self.fim["rep"], *tok("myproject\n")]
        for chunk in req.input_extra:
            if "sep" in self.fim:
                extra += [self.fim["sep"], *tok(chunk.filename + "\n")]
            else:
                extra += tok("\n\n--- snippet ---\n\n")
            extra += tok(chunk.text)
        if "sep" in self.fim:
            extra += [self.fim["sep"], *tok("filename\n")]
        prefix = tok(req.input_prefix) + tok(req.prompt)
        suffix = tok(req.input_suffix)
        full = len(extra) + len(prefix) + len(suffix)
        # Fit the context: keep room to generate, then drop the oldest context first.
        budget = self.n_ctx() - max(req.n_predict, 16) - 4
        suffix = suffix[: max(0, budget // 4)]
        prefix = prefix[-max(0, budget - len(suffix)):] if budget - len(suffix) > 0 else []
        extra = extra[-max(0, budget - len(suffix) - len(prefix)):] if budget - len(suffix) - len(prefix) > 0 else []
        head = [self.llm.token_bos()] if self.add_bos else []
        truncated = len(extra) + len(prefix) + len(suffix) < full
        return [*extra, *head, self.fim["pre"], *prefix, self.fim["suf"], *suffix, self.fim["mid"]], truncated


# --- HTTP ---------------------------------------------------------------------------------------


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


class _EngineStreamResponse(StreamingResponse):
    """Server-sent events from one engine request; however the response ends (done, client gone), the
    request is cancelled so that its slot is freed."""

    def __init__(self, events: AsyncIterator[str], stream: Stream) -> None:
        super().__init__(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self._engine_stream = stream

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._engine_stream.cancel()


def _sse(data: dict) -> str:
    return f"data: {json.dumps(data)}\n\n"


async def _until_done(request: Request, stream: Stream) -> Generation | None:
    """The finished generation, or None when the client disconnected first (the request is then cancelled)."""
    task = asyncio.ensure_future(stream.aresult())
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if done:
                return task.result()
            if await request.is_disconnected():
                return None
    finally:
        if not task.done():
            task.cancel()
        stream.cancel()


_GONE = Response(status_code=499)  # nginx's "client closed request": nobody reads it


def _usage(gen: Generation) -> dict:
    return {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
            "total_tokens": gen.prompt_tokens + gen.completion_tokens}


def _bearer_check(api_key: str | None):
    """A dependency refusing requests without ``Authorization: Bearer <api_key>`` (none when no key is set)."""

    def check(request: Request) -> None:
        if not api_key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise HTTPException(status_code=401, detail="invalid_api_key")

    return check


def create_app(server: ModelServer, api_key: str | None = None, routers: Sequence[APIRouter] = (),
               api_key_env: str = API_KEY_ENV) -> FastAPI:
    """The FastAPI app over ``server``; ``routers`` join it behind the same API key check."""
    app = FastAPI(title="mochi", description=f"OpenAI-compatible server for {server.model_id}")
    auth = [Depends(_bearer_check(api_key))]

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(p) for p in first["loc"] if p != "body")
        return _error(400, f"Invalid request: {loc or 'body'}: {first['msg']}", param=loc or None)

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, err: HTTPException) -> JSONResponse:
        if err.status_code == 401:
            return _error(401, "Incorrect or missing API key: send `Authorization: Bearer <key>` with the key the "
                          f"server was started with (${api_key_env}).", code="invalid_api_key")
        return _error(err.status_code, str(err.detail))

    @app.exception_handler(ContextLengthError)
    async def _too_long(_request: Request, err: ContextLengthError) -> JSONResponse:
        return _error(400, str(err), code="context_length_exceeded")

    @app.exception_handler(EngineClosed)
    async def _closing(_request: Request, err: EngineClosed) -> JSONResponse:
        return _error(503, str(err))

    def unknown_model(name: str) -> JSONResponse:
        return _error(404, f"The model {name!r} does not exist; this server serves {server.model_id!r}.",
                      param="model", code="model_not_found")

    def model_card() -> dict:
        return {"id": server.model_id, "object": "model", "created": server.created, "owned_by": "mochi"}

    def too_long(err: ContextLengthError, param: str) -> JSONResponse:
        return _error(400, str(err), param=param, code="context_length_exceeded")

    def logged(path: str, gen: Generation) -> None:
        log.info("%s: %d prompt + %d generated tokens, %s, %.0f ms", path, gen.prompt_tokens, gen.completion_tokens,
                 gen.finish_reason, gen.prompt_ms + gen.predicted_ms)

    async def submit(prompt: str | list[int], sampling: Sampling, pieces: bool) -> Stream:
        tokens = await run_in_threadpool(server.prompt_tokens, prompt)  # a 1 MB prompt takes a while
        return server.engine.submit(tokens, sampling, loop=asyncio.get_running_loop(), pieces=pieces)

    def budget(max_tokens: int | None, default: int) -> int:
        n = default if max_tokens is None else max_tokens
        return server.n_ctx() if n < 0 else n  # the engine caps it at what the context leaves

    def sampling(req: _Request, max_tokens: int, stops: list[str]) -> Sampling:
        return Sampling(max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p,
                        top_k=max(req.top_k, 0), min_p=req.min_p, seed=req.seed, stop=stops)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models", dependencies=auth)
    def list_models() -> dict:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id}", response_model=None, dependencies=auth)
    def get_model(model_id: str) -> dict | JSONResponse:
        return model_card() if model_id == server.model_id else unknown_model(model_id)

    @app.post("/v1/completions", response_model=None, dependencies=auth)
    async def completions(req: CompletionRequest, request: Request) -> Any:
        if req.model not in (None, server.model_id):
            return unknown_model(req.model)
        try:
            stream = await submit(req.prompt, sampling(req, budget(req.max_tokens, 16), req.stop_list()), req.stream)
        except ContextLengthError as err:
            return too_long(err, "prompt")
        except ValueError as err:
            return _error(400, str(err), param="prompt")
        cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def body(choices: list[dict], usage: dict | None) -> dict:
            return {"id": cid, "object": "text_completion", "created": created, "model": server.model_id,
                    "choices": choices, **({"usage": usage} if usage is not None else {})}

        if not req.stream:
            gen = await _until_done(request, stream)
            if gen is None:
                return _GONE
            logged("/v1/completions", gen)
            return body([{"text": gen.text, "index": 0, "logprobs": None, "finish_reason": gen.finish_reason}],
                        _usage(gen))
        include_usage = bool(req.stream_options and req.stream_options.include_usage)

        async def events() -> AsyncIterator[str]:
            while True:
                item = await stream.next()
                done = isinstance(item, Generation)
                yield _sse(body([{"text": "" if done else item, "index": 0, "logprobs": None,
                                  "finish_reason": item.finish_reason if done else None}], None))
                if done:
                    logged("/v1/completions", item)
                    if include_usage:
                        yield _sse(body([], _usage(item)))
                    break
            yield "data: [DONE]\n\n"

        return _EngineStreamResponse(events(), stream)

    async def chat_completions(req: ChatCompletionRequest, request: Request) -> Any:
        if req.model not in (None, server.model_id):
            return unknown_model(req.model)
        try:
            prompt = server.chat_prompt(req.messages)
        except (ValueError, ChatTemplateError) as err:
            return _error(400, str(err), param="messages")
        stops = [*req.stop_list(), *(s for s in server.chat_stops if s not in req.stop_list())]
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        try:
            stream = await submit(prompt, sampling(req, budget(max_tokens, -1), stops), req.stream)
        except ContextLengthError as err:
            return too_long(err, "messages")
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not req.stream:
            gen = await _until_done(request, stream)
            if gen is None:
                return _GONE
            logged("/v1/chat/completions", gen)
            return {
                "id": cid, "object": "chat.completion", "created": created, "model": server.model_id,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": gen.text},
                             "logprobs": None, "finish_reason": gen.finish_reason}],
                "usage": _usage(gen),
            }
        include_usage = bool(req.stream_options and req.stream_options.include_usage)

        def chunk(choices: list[dict], usage: dict | None = None) -> str:
            return _sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": server.model_id,
                         "choices": choices, **({"usage": usage} if usage is not None else {})})

        def delta(content: dict, finish: str | None) -> list[dict]:
            return [{"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}]

        async def events() -> AsyncIterator[str]:
            yield chunk(delta({"role": "assistant", "content": ""}, None))
            while True:
                item = await stream.next()
                if isinstance(item, Generation):
                    yield chunk(delta({}, item.finish_reason))
                    logged("/v1/chat/completions", item)
                    if include_usage:
                        yield chunk([], _usage(item))
                    break
                if item:
                    yield chunk(delta({"content": item}, None))
            yield "data: [DONE]\n\n"

        return _EngineStreamResponse(events(), stream)

    app.post("/v1/chat/completions", response_model=None, dependencies=auth)(chat_completions)
    app.post("/chat/completions", response_model=None, dependencies=auth, include_in_schema=False,
             )(chat_completions)  # llama.cpp answers both (Continue's llama.cpp provider posts here)

    async def native_completion(req: NativeCompletionRequest, request: Request) -> Any:
        """llama.cpp's own completion API: ``content`` pieces, ``stop`` true on the last one."""
        try:
            stream = await submit(req.prompt, Sampling(
                max_tokens=budget(req.n_predict, -1), temperature=req.temperature, top_k=max(req.top_k, 0),
                top_p=req.top_p if req.top_p > 0 else 1e-9, min_p=req.min_p, seed=None if req.seed < 0 else req.seed,
                stop=req.stop), req.stream)
        except ContextLengthError as err:
            return too_long(err, "prompt")
        except ValueError as err:
            return _error(400, str(err), param="prompt")
        settings = {"n_predict": req.n_predict, "temperature": req.temperature, "top_k": req.top_k,
                    "top_p": req.top_p, "min_p": req.min_p, "seed": req.seed, "stop": req.stop}

        def final(gen: Generation, content: str) -> dict:
            return {"index": 0, "content": content, "id_slot": -1, "stop": True, "model": server.model_id,
                    "tokens_predicted": gen.completion_tokens, "tokens_evaluated": gen.prompt_tokens,
                    "generation_settings": settings, "has_new_line": "\n" in gen.text, "truncated": False,
                    "stop_type": gen.stop_type, "stopping_word": gen.stop_word or "", "tokens_cached": 0,
                    "timings": gen.timings}

        if not req.stream:
            gen = await _until_done(request, stream)
            if gen is None:
                return _GONE
            logged(request.url.path, gen)
            return final(gen, gen.text)

        async def events() -> AsyncIterator[str]:
            while True:
                item = await stream.next()
                if isinstance(item, Generation):
                    logged(request.url.path, item)
                    yield _sse(final(item, ""))
                    return
                if item:
                    yield _sse({"index": 0, "content": item, "stop": False, "id_slot": -1})

        return _EngineStreamResponse(events(), stream)

    app.post("/completion", response_model=None, dependencies=auth)(native_completion)
    app.post("/completions", response_model=None, dependencies=auth, include_in_schema=False,
             )(native_completion)  # llama.cpp's other name for it

    @app.post("/infill", response_model=None, dependencies=auth)
    async def infill(req: InfillRequest, request: Request) -> Any:
        try:
            tokens, truncated = await run_in_threadpool(server.infill_prompt, req)
        except ValueError as err:
            return _error(400, str(err))
        n_predict = req.n_predict if req.n_predict >= 0 else server.n_ctx()
        stream = server.engine.submit(tokens, Sampling(max_tokens=n_predict, temperature=req.temperature,
                                                       top_k=max(req.top_k, 0), top_p=req.top_p, min_p=req.min_p,
                                                       seed=req.seed), loop=asyncio.get_running_loop(), pieces=False)
        gen = await _until_done(request, stream)
        if gen is None:
            return _GONE
        logged("/infill", gen)
        return {
            "index": 0,
            "content": gen.text,
            "model": server.model_id,
            "stop": True,
            "stop_type": gen.stop_type,
            "stopping_word": gen.stop_word or "",
            "tokens_evaluated": len(tokens),
            "tokens_predicted": gen.completion_tokens,
            "tokens_cached": 0,
            "truncated": truncated,
            "timings": gen.timings,
        }

    for router in routers:
        app.include_router(router, dependencies=auth)
    return app


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(model_path: str | Path, host: str = "127.0.0.1", port: int = 8080, model_id: str | None = None,
          n_ctx: int = 0, lora_path: str | Path | None = None, n_threads: int | None = None, parallel: int = 4,
          api_key: str | None = None, assist_artifacts: str | Path | None = None,
          api_key_env: str = API_KEY_ENV) -> None:
    """Load ``model_path`` (a .gguf) and serve it until interrupted; with ``assist_artifacts`` (a project's
    artifacts root holding its chunks and conventions) the /assist endpoints too."""
    import uvicorn

    from mochi_pipeline.deployment.assist import Assistant, AssistError
    from mochi_pipeline.deployment.assist_api import assist_router

    if not api_key and not _is_loopback(host):
        print(f"mochi serve: WARNING: listening on {host} without an API key: anyone who can reach it can use the "
              f"model. Set ${api_key_env} to require `Authorization: Bearer <key>`.", flush=True)
    server = ModelServer(model_path, model_id=model_id, n_ctx=n_ctx, lora_path=lora_path, n_threads=n_threads,
                         parallel=parallel)
    routers = []
    if assist_artifacts is not None:
        try:
            routers.append(assist_router(Assistant.from_artifacts(assist_artifacts, server)))
        except AssistError as err:
            print(f"mochi serve: no /assist endpoints: {err}", flush=True)
    print(f"mochi serve: {server.model_id} ({server.model_path.name}), context {server.n_ctx()} tokens, "
          f"{parallel} parallel slots, API key {'required' if api_key else 'off'}", flush=True)
    if server.fim_template():
        print(f"mochi serve: fill-in-the-middle prompt for editors (Continue's promptTemplates.autocomplete): "
              f"{server.fim_template()}", flush=True)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    try:
        uvicorn.run(create_app(server, api_key=api_key, routers=routers, api_key_env=api_key_env), host=host,
                    port=port, log_level="info")
    finally:
        server.close()
