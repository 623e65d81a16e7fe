"""`mochi mcp` over stdio, driven by the `mcp` SDK's own client as Claude Code would drive it."""

from __future__ import annotations

import json
import os
import sys

import anyio
import pytest
from mcp import Client, StdioServerParameters

pytestmark = pytest.mark.slow

TOOLS = {"mochi_context", "mochi_rerank", "mochi_verify", "mochi_complete"}


def _call_all(params: StdioServerParameters) -> dict:
    async def main() -> dict:
        async with Client(params, read_timeout_seconds=120) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            out = {"tools": tools}
            out["context"] = await client.call_tool("mochi_context", {"query": "centroid of points", "k": 2})
            out["rerank"] = await client.call_tool(
                "mochi_rerank", {"prompt": "def add(a, b):\n", "candidates": ["    }{ ]] ~~\n", "    return a + b\n"]})
            out["verify"] = await client.call_tool("mochi_verify", {"code": "def getValue():\n    return 1\n",
                                                                    "path": "pkg/x.py"})
            out["complete"] = await client.call_tool("mochi_complete", {"prompt": "import ", "max_tokens": 4})
            out["infill"] = await client.call_tool("mochi_complete", {"prompt": "def f(x):\n    return ",
                                                                      "suffix": "\n", "max_tokens": 4})
            out["bad"] = await client.call_tool("mochi_rerank", {"prompt": "x", "candidates": []})
            return out

    return anyio.run(main)


def _text(result) -> str:
    assert not result.is_error, result
    return "".join(c.text for c in result.content if c.type == "text")


def test_the_four_tools_over_stdio(project, model):
    env = {k: v for k, v in os.environ.items() if k not in ("MOCHI_CONFIG", "DAGSTER_HOME")}
    params = StdioServerParameters(command=sys.executable, args=["-m", "mochi_pipeline.cli", "mcp", "--model",
                                                                 str(model.model_path)],
                                   cwd=str(project), env=env)
    out = _call_all(params)
    assert set(out["tools"]) == TOOLS
    assert "candidates" in out["tools"]["mochi_rerank"].input_schema["properties"]
    context = _text(out["context"])
    assert context.startswith("# Project context for: centroid of points") and "pkg/core.py" in context
    ranked = out["rerank"].structured_content["result"]
    assert [r["index"] for r in ranked] == [1, 0] and ranked[0]["score"] > ranked[1]["score"]
    findings = out["verify"].structured_content["result"]
    assert any(f["rule"] == "function_naming" and f["suggestion"] == "rename to get_value" for f in findings)
    assert _text(out["complete"]) and isinstance(_text(out["infill"]), str)
    assert out["bad"].is_error and "candidates" in json.dumps(out["bad"].model_dump())

