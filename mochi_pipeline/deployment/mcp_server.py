"""An MCP server (the ``mcp`` SDK) that lends a large model the project's own small model: ``mochi mcp``.

Tools: ``mochi_context`` (a context block for a task: retrieved code, conventions, signatures, a
note), ``mochi_rerank`` (candidates ordered by the domain model's likelihood), ``mochi_verify``
(departures from the project's conventions and surprising lines) and ``mochi_complete``
(completion, or fill-in-the-middle when a suffix is given, in the format the model was trained on).
Served over stdio (Claude Code: ``claude mcp add mochi -- mochi mcp``).
"""

from __future__ import annotations

import contextlib

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from mochi_pipeline.deployment.assist import Assistant, AssistError, Finding, RankedCandidate
from mochi_pipeline.deployment.engine import ContextLengthError

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
    """The MCP server over ``assistant`` and ``model`` (a ``server.ModelServer``)."""
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
