"""Run a FastAPI app under uvicorn on 127.0.0.1, on a port the OS picks (no port-reuse race), in a thread."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import uvicorn


class Running:
    """``with Running(app) as url:`` serves ``app`` at ``url`` until the block ends."""

    def __init__(self, app, log_level: str = "warning", own_logging: bool = True) -> None:
        """``own_logging=False``: uvicorn leaves logging alone, so its loggers propagate (pytest's caplog sees them)."""
        extra = {} if own_logging else {"log_config": None}
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level=log_level, **extra))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def sse_events(lines: Iterator[str]) -> list:
    """The JSON payloads of a server-sent event stream, with "[DONE]" kept as the string."""
    out = []
    for line in lines:
        if line.startswith("data:"):
            data = line[len("data:"):].strip()
            out.append(data if data == "[DONE]" else json.loads(data))
    return out
