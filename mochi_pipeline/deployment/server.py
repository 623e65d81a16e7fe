"""OpenAI-compatible HTTP server for a GGUF model, backed by llama-cpp-python.

Endpoints: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions`` (both with
``stream: true`` as server-sent events ending in ``data: [DONE]``), and ``POST /infill`` in the
wire format of llama.cpp's own server, which editor plugins such as llama.vscode speak. Chat
prompts are rendered with the model's own chat template (stored in the GGUF), so a served model
sees the same text it was fine-tuned on. Requests are decoded together, in parallel slots of one
llama.cpp context (engine.py). With an API key (``MOCHI_API_KEY``, like llama.cpp's and vLLM's
``--api-key``) every endpoint but ``/health`` wants ``Authorization: Bearer <key>``. A prompt that
does not fit the context gets OpenAI's 400 ``context_length_exceeded``. More routes (the assist
endpoints) join through ``create_app(routers=...)``, behind the same key.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from mochi_pipeline.deployment.chat_template import ChatTemplateError, parse_chat_template, render_jinja
from mochi_pipeline.deployment.engine import BatchEngine, ContextLengthError, Generation, Sampling
from mochi_pipeline.deployment.gguf_metadata import read_chat_info
from mochi_pipeline.deployment.gguf_verify import load_llama

API_KEY_ENV = "MOCHI_API_KEY"


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use (user, stream_options, ...)

    model: str
    max_tokens: int | None = Field(None, ge=1, le=8192)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    stream: bool = False
    seed: int | None = None
    n: int = Field(1, ge=1, le=1, description="Only one choice per request is supported.")

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class CompletionRequest(_Request):
    prompt: str = Field(min_length=1)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=8192)


class InputExtra(BaseModel):
    model_config = ConfigDict(extra="ignore")

    filename: str = "tmp"
    text: str = ""


class InfillRequest(BaseModel):
    """llama.cpp server ``/infill`` request (llama.vscode): code before/after the cursor plus context chunks."""

    model_config = ConfigDict(extra="ignore")  # samplers, t_max_*_ms, cache_prompt, n_indent, ...

    input_prefix: str = ""
    input_suffix: str = ""
    input_extra: list[InputExtra] = Field(default_factory=list)
    prompt: str = ""
    n_predict: int = Field(64, ge=-1, le=8192)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_k: int = Field(40, ge=0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    seed: int | None = None


class ModelServer:
    """One loaded GGUF model, its batch engine, and what is needed to prompt it."""

    def __init__(self, model_path: str | Path, model_id: str | None = None, n_ctx: int = 0,
                 lora_path: str | Path | None = None, n_threads: int | None = None, parallel: int = 4):
        import llama_cpp

        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"No GGUF model at {self.model_path}; export one first (gguf_model asset).")
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

    def generate(self, prompt: str | list[int], sampling: Sampling) -> Iterator[str | Generation]:
        tokens = self.tokenize(prompt) if isinstance(prompt, str) else prompt
        return self.engine.generate(tokens, sampling)

    def complete(self, prompt: str, max_tokens: int = 64, stop: Sequence[str] = ()) -> str:
        """Greedy continuation of ``prompt`` (raises ContextLengthError when it does not fit)."""
        return self.engine.complete(self.tokenize(prompt), Sampling(max_tokens=max_tokens, stop=list(stop))).text

    def infill(self, prefix: str, suffix: str, max_tokens: int = 64) -> str:
        """The code between ``prefix`` and ``suffix``, prompted with the model's FIM tokens as /infill does."""
        tokens = self.infill_tokens(InfillRequest(input_prefix=prefix, input_suffix=suffix, n_predict=max_tokens))
        return self.engine.complete(tokens, Sampling(max_tokens=max_tokens)).text

    def score(self, prompt: str, continuation: str) -> list[tuple[str, float]]:
        """(token text, natural-log probability) of each token of ``continuation`` after BOS + ``prompt``.

        Prompt and continuation are tokenized apart and joined, so the seam between them is exact.
        """
        head = [self.llm.token_bos(), *self.tokenize(prompt, bos=False)]
        tail = self.tokenize(continuation, bos=False)
        if not tail:
            raise ValueError("Nothing to score: the continuation is empty.")
        logprobs = self.engine.score(head + tail, len(head))
        return [(self.llm.detokenize([t], special=True).decode("utf-8", errors="replace"), lp)
                for t, lp in zip(tail, logprobs, strict=True)]

    def chat_prompt(self, messages: Sequence[ChatMessage | dict[str, str]]) -> str:
        if not self.chat_template:
            raise ValueError(f"Model {self.model_id} has no chat template; use /v1/completions instead.")
        plain = [m.model_dump() if isinstance(m, ChatMessage) else dict(m) for m in messages]
        text = render_jinja(self.chat_template, plain, True, self.bos, self.eos)
        # llama.cpp adds BOS itself when the model wants one
        return text[len(self.bos):] if self.bos and text.startswith(self.bos) else text

    def infill_tokens(self, req: InfillRequest) -> list[int]:
        """Prompt tokens laid out like llama.cpp's server ``format_infill`` (PSM order)."""
        missing = {"pre", "suf", "mid"} - self.fim.keys()
        if missing:
            raise ValueError(f"Model {self.model_id} has no fill-in-the-middle tokens ({sorted(missing)} missing).")

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
        # Fit the context: keep room to generate, then drop the oldest context first.
        budget = self.n_ctx() - max(req.n_predict, 16) - 4
        suffix = suffix[: max(0, budget // 4)]
        prefix = prefix[-max(0, budget - len(suffix)):] if budget - len(suffix) > 0 else []
        extra = extra[-max(0, budget - len(suffix) - len(prefix)):] if budget - len(suffix) - len(prefix) > 0 else []
        head = [self.llm.token_bos()] if self.add_bos else []
        return [*extra, *head, self.fim["pre"], *prefix, self.fim["suf"], *suffix, self.fim["mid"]]


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


def _sse(chunks: Iterator[dict]) -> StreamingResponse:
    def events() -> Iterator[str]:
        for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def _completion_body(gen: Generation, model_id: str) -> dict:
    return {
        "id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()), "model": model_id,
        "choices": [{"text": gen.text, "index": 0, "logprobs": None, "finish_reason": gen.finish_reason}],
        "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                  "total_tokens": gen.prompt_tokens + gen.completion_tokens},
    }


def _bearer_check(api_key: str | None):
    """A dependency refusing requests without ``Authorization: Bearer <api_key>`` (none when no key is set)."""

    def check(request: Request) -> None:
        if not api_key:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise HTTPException(status_code=401, detail="invalid_api_key")

    return check


def create_app(server: ModelServer, api_key: str | None = None, routers: Sequence[APIRouter] = ()) -> FastAPI:
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
                          f"server was started with (${API_KEY_ENV}).", code="invalid_api_key")
        return _error(err.status_code, str(err.detail))

    @app.exception_handler(ContextLengthError)
    async def _too_long(_request: Request, err: ContextLengthError) -> JSONResponse:
        return _error(400, str(err), code="context_length_exceeded")

    def unknown_model(name: str) -> JSONResponse:
        return _error(404, f"The model {name!r} does not exist; this server serves {server.model_id!r}.",
                      param="model", code="model_not_found")

    def model_card() -> dict:
        return {"id": server.model_id, "object": "model", "created": server.created, "owned_by": "mochi"}

    def too_long(err: ContextLengthError, param: str) -> JSONResponse:
        return _error(400, str(err), param=param, code="context_length_exceeded")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models", dependencies=auth)
    def list_models() -> dict:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id}", response_model=None, dependencies=auth)
    def get_model(model_id: str) -> dict | JSONResponse:
        return model_card() if model_id == server.model_id else unknown_model(model_id)

    def sampling(req: _Request, max_tokens: int, stops: list[str]) -> Sampling:
        return Sampling(max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, seed=req.seed,
                        stop=stops)

    def finished(pieces: Iterator[str | Generation]) -> Generation:
        return next(p for p in pieces if isinstance(p, Generation))

    @app.post("/v1/completions", response_model=None, dependencies=auth)
    def completions(req: CompletionRequest) -> Any:
        if req.model != server.model_id:
            return unknown_model(req.model)
        try:
            pieces = server.generate(req.prompt, sampling(req, req.max_tokens or 16, req.stop_list()))
        except ContextLengthError as err:
            return too_long(err, "prompt")
        if not req.stream:
            return _completion_body(finished(pieces), server.model_id)
        cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def chunks() -> Iterator[dict]:
            for piece in pieces:
                done = isinstance(piece, Generation)
                yield {"id": cid, "object": "text_completion", "created": created, "model": server.model_id,
                       "choices": [{"text": "" if done else piece, "index": 0, "logprobs": None,
                                    "finish_reason": piece.finish_reason if done else None}]}

        return _sse(chunks())

    @app.post("/v1/chat/completions", response_model=None, dependencies=auth)
    def chat_completions(req: ChatCompletionRequest) -> Any:
        if req.model != server.model_id:
            return unknown_model(req.model)
        try:
            prompt = server.chat_prompt(req.messages)
        except (ValueError, ChatTemplateError) as err:
            return _error(400, str(err), param="messages")
        stops = [*req.stop_list(), *(s for s in server.chat_stops if s not in req.stop_list())]
        max_tokens = req.max_completion_tokens or req.max_tokens or 256
        try:
            pieces = server.generate(prompt, sampling(req, max_tokens, stops))
        except ContextLengthError as err:
            return too_long(err, "messages")
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not req.stream:
            gen = finished(pieces)
            body = _completion_body(gen, server.model_id)
            return {
                "id": cid, "object": "chat.completion", "created": created, "model": server.model_id,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": gen.text},
                             "logprobs": None, "finish_reason": gen.finish_reason}],
                "usage": body["usage"],
            }

        def chunk(delta: dict, finish: str | None) -> dict:
            return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": server.model_id,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        def chat_chunks() -> Iterator[dict]:
            yield chunk({"role": "assistant", "content": ""}, None)
            for piece in pieces:
                if isinstance(piece, Generation):
                    yield chunk({}, piece.finish_reason)
                elif piece:
                    yield chunk({"content": piece}, None)

        return _sse(chat_chunks())

    @app.post("/infill", response_model=None, dependencies=auth)
    def infill(req: InfillRequest) -> Any:
        try:
            tokens = server.infill_tokens(req)
        except ValueError as err:
            return _error(400, str(err))
        n_predict = req.n_predict if req.n_predict > 0 else server.n_ctx() - len(tokens)
        started = time.perf_counter()
        gen = server.engine.complete(tokens, Sampling(max_tokens=n_predict, temperature=req.temperature,
                                                      top_k=req.top_k, top_p=req.top_p, seed=req.seed))
        return {
            "content": gen.text,
            "model": server.model_id,
            "stop": True,
            "stop_type": "eos" if gen.finish_reason == "stop" else "limit",
            "tokens_evaluated": len(tokens),
            "tokens_predicted": gen.completion_tokens,
            "timings": {"predicted_ms": round((time.perf_counter() - started) * 1000, 1)},
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
          api_key: str | None = None, assist_artifacts: str | Path | None = None) -> None:
    """Load ``model_path`` (a .gguf) and serve it until interrupted; with ``assist_artifacts`` (a project's
    artifacts root holding its chunks and conventions) the /assist endpoints too."""
    import uvicorn

    from mochi_pipeline.deployment.assist import Assistant, AssistError
    from mochi_pipeline.deployment.assist_api import assist_router

    if not api_key and not _is_loopback(host):
        print(f"mochi serve: WARNING: listening on {host} without an API key: anyone who can reach it can use the "
              f"model. Set ${API_KEY_ENV} to require `Authorization: Bearer <key>`.", flush=True)
    server = ModelServer(model_path, model_id=model_id, n_ctx=n_ctx, lora_path=lora_path, n_threads=n_threads,
                         parallel=parallel)
    routers = []
    if assist_artifacts is not None:
        try:
            routers.append(assist_router(Assistant.from_artifacts(assist_artifacts, server)))
        except AssistError as err:
            print(f"mochi serve: no /assist endpoints: {err}", flush=True)
    try:
        uvicorn.run(create_app(server, api_key=api_key, routers=routers), host=host, port=port, log_level="info")
    finally:
        server.close()
