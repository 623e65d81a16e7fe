"""An MCP server (the ``mcp`` SDK) that lends a large model the project's own small model: ``mochi mcp``.

Tools: ``mochi_context`` (a context block for a task: retrieved code, conventions, signatures, a
note), ``mochi_rerank`` (candidates ordered by the domain model's likelihood), ``mochi_verify``
(departures from the project's conventions and surprising lines) and ``mochi_complete``
(completion, or fill-in-the-middle when a suffix is given, in the format the model was trained on).
Served over stdio (Claude Code: ``claude mcp add mochi -- mochi mcp``) or streamable HTTP at
``http://HOST:PORT/mcp`` (``mochi mcp --http``; ``claude mcp add --transport http mochi URL``), behind the
same bearer key as ``mochi serve`` when one is set.
"""

from __future__ import annotations

import contextlib
import sys

from fastapi.exceptions import HTTPException
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from starlette.requests import Request

from mochi_pipeline.deployment.assist import Assistant, AssistError, Finding, RankedCandidate
from mochi_pipeline.deployment.engine import ContextLengthError
from mochi_pipeline.deployment.server import API_KEY_ENV, _bearer_check, _error, _is_loopback

INSTRUCTIONS = (
    "Tools backed by a small language model fine-tuned on this project's own repository. Call mochi_context "
    "before writing code for this project, mochi_verify on code you wrote, mochi_rerank to choose between "
    "candidate implementations, mochi_complete for code in the project's style."
)


@contextlib.contextmanager
def _as_tool_error():
    """Bad input reaches the calling model as the tool's error text (the SDK hides other exceptions)."""
    try:
        yield
    except (AssistError, ContextLengthError, ValueError) as err:
        raise ToolError(str(err)) from None


def build_mcp(assistant: Assistant, model) -> MCPServer:
    """The MCP server over ``assistant`` and ``model`` (a ``server.ModelServer``).

    The tools are sync on purpose: the SDK runs sync tools in worker threads (``anyio.to_thread``), so llama.cpp
    never blocks the event loop (which over HTTP also serves the other sessions), and ``model``'s batch engine
    already serialises all decoding on its own thread, so concurrent calls need no lock here.
    """
    mcp = MCPServer(name="mochi", instructions=INSTRUCTIONS)

    @mcp.tool(name="mochi_context")
    def mochi_context(query: str, k: int = 5, rewrite: bool = False) -> str:
        """Project context for a task: the repository's most relevant code (BM25), its conventions, the signatures
        of the symbols involved and a note by the project's model. `rewrite` widens the search with a sketch the
        project's model writes first."""
        with _as_tool_error():
            return assistant.enhance(query, k=k, rewrite=rewrite).markdown()

    @mcp.tool(name="mochi_rerank")
    def mochi_rerank(prompt: str, candidates: list[str]) -> list[RankedCandidate]:
        """Order candidate answers (code, messages) for `prompt` by the project's model: mean log-probability per
        token, best first; `index` is the candidate's position in the request."""
        with _as_tool_error():
            return assistant.rerank(prompt, candidates)

    @mcp.tool(name="mochi_verify")
    def mochi_verify(code: str, path: str = "") -> list[Finding]:
        """Check code against this project's conventions (naming, indentation, line length, quotes, imports, error
        handling) and flag the lines the project's model finds most surprising, each with a reason and a
        suggestion. `path` (e.g. `pkg/module.py`) tells the language."""
        with _as_tool_error():
            return assistant.verify(code, path=path)

    @mcp.tool(name="mochi_complete")
    def mochi_complete(prompt: str, suffix: str = "", max_tokens: int = 128) -> str:
        """Continue `prompt` with the project's model; with `suffix`, fill in the code between `prompt` and
        `suffix` (fill-in-the-middle in the model's own format)."""
        with _as_tool_error():
            if suffix:
                return model.infill(prompt, suffix, max_tokens=max_tokens)
            return model.complete(prompt, max_tokens=max_tokens)

    return mcp


def _with_bearer(app, api_key: str, api_key_env: str):
    """``app`` behind ``mochi serve``'s key check: HTTP requests without the bearer token get its 401."""
    check = _bearer_check(api_key)

    async def guarded(scope, receive, send) -> None:
        if scope["type"] == "http":  # lifespan events pass: they start the SDK's session manager
            try:
                check(Request(scope))
            except HTTPException:
                response = _error(401, "Incorrect or missing API key: send `Authorization: Bearer <key>` with the "
                                  f"key the server was started with (${api_key_env}).", code="invalid_api_key")
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
        await app(scope, receive, send)

    return guarded


def serve_http(mcp: MCPServer, host: str = "127.0.0.1", port: int = 8765, api_key: str | None = None,
               api_key_env: str = API_KEY_ENV) -> None:
    """Serve ``mcp`` over streamable HTTP at ``http://host:port/mcp`` until interrupted (port 0: any free one)."""
    import uvicorn

    if not api_key and not _is_loopback(host):
        print(f"mochi mcp: WARNING: listening on {host} without an API key: anyone who can reach it can use the "
              f"model. Set ${api_key_env} to require `Authorization: Bearer <key>`.", file=sys.stderr, flush=True)
    app = mcp.streamable_http_app(host=host)  # host: the SDK turns on DNS-rebinding protection on loopback
    config = uvicorn.Config(_with_bearer(app, api_key, api_key_env) if api_key else app, host=host, port=port,
                            log_level="warning", timeout_graceful_shutdown=5)
    # Bound and listening here, so port 0's real port can be printed; early clients wait in the backlog.
    sock = config.bind_socket()
    sock.listen(config.backlog)
    shown = f"[{host}]" if ":" in host else host
    print(f"mochi mcp: streamable HTTP on http://{shown}:{sock.getsockname()[1]}/mcp, API key "
          f"{'required' if api_key else 'off'}", file=sys.stderr, flush=True)
    uvicorn.Server(config).run(sockets=[sock])
