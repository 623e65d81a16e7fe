"""A real HTTP server on 127.0.0.1 for the services mochi talks to but tests cannot reach.

Each service's stand-in subclasses ``LoopbackServer`` and answers ``handle(Request) -> Reply`` in
that service's wire format; the server records every request so tests can assert what the real
client library sent (pagination, cursors, retries).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

T = TypeVar("T")


class PortTaken(RuntimeError):
    """The port a server was given was taken by another process before the server could bind it."""


def port_taken(output: str) -> bool:
    """Whether a server's output says it could not bind its port (EADDRINUSE, in any server's words)."""
    text = output.lower()
    return "address already in use" in text or "eaddrinuse" in text or "errno 98" in text


def on_a_free_port(start: Callable[[int], T], attempts: int = 5) -> T:
    """``start(port)`` on a port that was free a moment ago; again on another port if it raises ``PortTaken``.

    Servers this suite starts as other processes (redis-server, PostgreSQL, dagster-webserver, torch's
    rendezvous) cannot be handed a bound socket, so the port is closed before they bind it and another process
    may take it in between. In-process servers bind port 0 themselves instead (``served_app.Running``).
    """
    for attempt in range(attempts):
        try:
            return start(free_port())
        except PortTaken:
            if attempt + 1 == attempts:
                raise
    raise AssertionError("unreachable")


def free_port() -> int:
    """A port on 127.0.0.1 free right now (use it through ``on_a_free_port``: it may be taken before it is bound)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections for as long as the block runs: bound, never listening, so no
    other process can take it and answer."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | dict | list = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # sleep before answering (client timeouts)

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if isinstance(self.body, dict | list):
            headers.setdefault("Content-Type", "application/json")
            return json.dumps(self.body).encode(), headers
        if isinstance(self.body, str):
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            return self.body.encode(), headers
        return self.body, headers


class LoopbackServer:
    """Serves ``self.handle`` on an ephemeral port of 127.0.0.1 while used as a context manager."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def handle(self, request: Request) -> Reply:  # pragma: no cover - every service overrides it
        raise NotImplementedError

    def __enter__(self) -> LoopbackServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query={k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )
                with server._lock:
                    server.requests.append(request)
                reply = server.handle(request)
                if reply.delay_s:
                    threading.Event().wait(reply.delay_s)
                body, headers = reply.encoded()
                try:
                    self.send_response(reply.status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            do_GET = do_POST = do_PUT = do_HEAD = _serve

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def seen(self, path_prefix: str) -> list[Request]:
        """Requests whose path starts with ``path_prefix``, in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]
