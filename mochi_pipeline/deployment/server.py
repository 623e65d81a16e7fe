"""OpenAI-compatible HTTP server for a GGUF model, backed by llama-cpp-python.

Endpoints: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions`` (both with
``stream: true`` as server-sent events ending in ``data: [DONE]``), and ``POST /infill`` in the
wire format of llama.cpp's own server, which editor plugins such as llama.vscode speak. Chat
prompts are rendered with the model's own chat template (stored in the GGUF), so a served model
sees the same text it was fine-tuned on. One llama.cpp context serves requests one at a time.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from mochi_pipeline.deployment.chat_template import ChatTemplateError, parse_chat_template, render_jinja
from mochi_pipeline.deployment.gguf_metadata import read_chat_info
from mochi_pipeline.deployment.gguf_verify import load_llama


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
    """One loaded GGUF model and what is needed to prompt it."""

    def __init__(self, model_path: str | Path, model_id: str | None = None, n_ctx: int = 0,
                 lora_path: str | Path | None = None, n_threads: int | None = None):
        import llama_cpp

        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"No GGUF model at {self.model_path}; export one first (gguf_model asset).")
        self.model_id = model_id or self.model_path.stem
        self.created = int(time.time())
        extra: dict[str, Any] = {"lora_path": str(lora_path)} if lora_path else {}
        if n_threads:
            extra["n_threads"] = n_threads
        self.llm = load_llama(self.model_path, n_ctx=n_ctx, **extra)
        self.lock = threading.Lock()  # a llama.cpp context is not safe to share between threads
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

    def chat_prompt(self, messages: list[ChatMessage]) -> str:
        if not self.chat_template:
            raise ValueError(f"Model {self.model_id} has no chat template; use /v1/completions instead.")
        text = render_jinja(self.chat_template, [m.model_dump() for m in messages], True, self.bos, self.eos)
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
        budget = self.llm.n_ctx() - max(req.n_predict, 16) - 4
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


def create_app(server: ModelServer) -> FastAPI:
    app = FastAPI(title="mochi", description=f"OpenAI-compatible server for {server.model_id}")

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(p) for p in first["loc"] if p != "body")
        return _error(400, f"Invalid request: {loc or 'body'}: {first['msg']}", param=loc or None)

    def unknown_model(name: str) -> JSONResponse:
        return _error(404, f"The model {name!r} does not exist; this server serves {server.model_id!r}.",
                      param="model", code="model_not_found")

    def model_card() -> dict:
        return {"id": server.model_id, "object": "model", "created": server.created, "owned_by": "mochi"}

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    def list_models() -> dict:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id}", response_model=None)
    def get_model(model_id: str) -> dict | JSONResponse:
        return model_card() if model_id == server.model_id else unknown_model(model_id)

    def run_completion(prompt: str | list[int], req: _Request, max_tokens: int, stops: list[str]) -> Any:
        kwargs = dict(max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, stop=stops,
                      stream=req.stream, seed=req.seed)
        if not req.stream:
            with server.lock:
                return server.llm.create_completion(prompt, **kwargs)

        def locked() -> Iterator[dict]:
            with server.lock:
                yield from server.llm.create_completion(prompt, **kwargs)

        return locked()

    @app.post("/v1/completions", response_model=None)
    def completions(req: CompletionRequest) -> Any:
        if req.model != server.model_id:
            return unknown_model(req.model)
        result = run_completion(req.prompt, req, req.max_tokens or 16, req.stop_list())
        if not req.stream:
            return {**result, "model": server.model_id}
        return _sse({**chunk, "model": server.model_id} for chunk in result)

    @app.post("/v1/chat/completions", response_model=None)
    def chat_completions(req: ChatCompletionRequest) -> Any:
        if req.model != server.model_id:
            return unknown_model(req.model)
        try:
            prompt = server.chat_prompt(req.messages)
        except (ValueError, ChatTemplateError) as err:
            return _error(400, str(err), param="messages")
        stops = [*req.stop_list(), *(s for s in server.chat_stops if s not in req.stop_list())]
        max_tokens = req.max_completion_tokens or req.max_tokens or 256
        result = run_completion(prompt, req, max_tokens, stops)
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not req.stream:
            choice = result["choices"][0]
            return {
                "id": cid, "object": "chat.completion", "created": created, "model": server.model_id,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": choice["text"]},
                             "logprobs": None, "finish_reason": choice["finish_reason"]}],
                "usage": result["usage"],
            }

        def chunk(delta: dict, finish: str | None) -> dict:
            return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": server.model_id,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        def chat_chunks() -> Iterator[dict]:
            yield chunk({"role": "assistant", "content": ""}, None)
            finish = None
            for part in result:
                choice = part["choices"][0]
                if choice["text"]:
                    yield chunk({"content": choice["text"]}, None)
                finish = choice["finish_reason"] or finish
            yield chunk({}, finish or "stop")

        return _sse(chat_chunks())

    @app.post("/infill", response_model=None)
    def infill(req: InfillRequest) -> Any:
        try:
            tokens = server.infill_tokens(req)
        except ValueError as err:
            return _error(400, str(err))
        n_predict = req.n_predict if req.n_predict > 0 else server.llm.n_ctx() - len(tokens)
        started = time.perf_counter()
        with server.lock:
            result = server.llm.create_completion(
                tokens, max_tokens=n_predict, temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
                seed=req.seed,
            )
        choice = result["choices"][0]
        return {
            "content": choice["text"],
            "model": server.model_id,
            "stop": True,
            "stop_type": "eos" if choice["finish_reason"] == "stop" else "limit",
            "tokens_evaluated": len(tokens),
            "tokens_predicted": result["usage"]["completion_tokens"],
            "timings": {"predicted_ms": round((time.perf_counter() - started) * 1000, 1)},
        }

    return app


def serve(model_path: str | Path, host: str = "127.0.0.1", port: int = 8080, model_id: str | None = None,
          n_ctx: int = 0, lora_path: str | Path | None = None, n_threads: int | None = None) -> None:
    """Load ``model_path`` (a .gguf) and serve it until interrupted."""
    import uvicorn

    server = ModelServer(model_path, model_id=model_id, n_ctx=n_ctx, lora_path=lora_path, n_threads=n_threads)
    uvicorn.run(create_app(server), host=host, port=port, log_level="info")
