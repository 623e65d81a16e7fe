"""`mochi mcp` over stdio and streamable HTTP, driven by the `mcp` SDK's own client as Claude Code would drive it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

pytestmark = pytest.mark.slow

TOOLS = {"mochi_context", "mochi_rerank", "mochi_verify", "mochi_complete"}


def _call_all(server: StdioServerParameters | str, headers: dict | None = None) -> dict:
    async def main() -> dict:
        async with (httpx2.AsyncClient(headers=headers, timeout=120) as http,  # the URL's; unused over stdio
                    Client(streamable_http_client(server, http_client=http) if isinstance(server, str) else server,
                           read_timeout_seconds=120) as client):
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


def _env(**extra: str) -> dict:
    return {**{k: v for k, v in os.environ.items() if k not in ("MOCHI_CONFIG", "DAGSTER_HOME")}, **extra}


def _check(out: dict) -> None:
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


def test_the_four_tools_over_stdio(project, model):
    params = StdioServerParameters(command=sys.executable, args=["-m", "mochi_pipeline.cli", "mcp", "--model",
                                                                 str(model.model_path)],
                                   cwd=str(project), env=_env())
    _check(_call_all(params))


def test_the_four_tools_over_streamable_http(project, model):
    key = "mcp-test-key"
    proc = subprocess.Popen([sys.executable, "-m", "mochi_pipeline.cli", "mcp", "--http", "--port", "0", "--model",
                             str(model.model_path)], cwd=project, env=_env(MOCHI_API_KEY=key),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Drained all along: llama.cpp logs to stderr, and a full pipe would stall the server mid-request.
    lines: list[str] = []
    started = threading.Event()

    def drain() -> None:
        for line in proc.stderr:
            lines.append(line)
            if re.search(r"http://\S+/mcp", line):
                started.set()
        started.set()  # ended without the URL: the assertion below shows why

    threading.Thread(target=drain, daemon=True).start()
    try:
        assert started.wait(120), "".join(lines)
        found = [m for line in lines if (m := re.search(r"http://\S+/mcp", line))]
        assert found and proc.poll() is None, "".join(lines)
        url = found[0].group(0).rstrip(",")
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            refused = httpx2.post(url, json=ping, headers=headers)
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        _check(_call_all(url, headers={"Authorization": f"Bearer {key}"}))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.stdout.read() == ""  # the URL and logs go to stderr, as in stdio mode
