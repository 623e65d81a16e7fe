"""A real HTTP server on 127.0.0.1 speaking OpenAI's chat-completions wire format, scripted per symbol."""

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_KEY = "sk-test"


class ChatServer:
    """Scripted per symbol: centroid -> 429 (Retry-After: 1) then OK; perimeter -> non-JSON content;
    scaled -> a reply without choices; clamp -> always 500; anything else -> two valid pairs."""

    def __init__(self, delay_s: float = 0.0):
        self.requests: Counter = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                name = re.search(r"defines `(\w+)`", body["messages"][1]["content"]).group(1)
                with server.lock:
                    server.requests[name] += 1
                    seen = server.requests[name]
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                time.sleep(delay_s)
                with server.lock:
                    server.in_flight -= 1
                if self.path != "/v1/chat/completions" or self.headers.get("Authorization") != f"Bearer {API_KEY}":
                    return self._send(401, {"error": {"message": "invalid api key"}})
                if name == "centroid" and seen == 1:
                    return self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"})
                if name == "clamp":
                    return self._send(500, {"error": {"message": "boom"}})
                if name == "scaled":
                    return self._send(200, {"id": "x", "object": "chat.completion"})
                content = (
                    "Sure! Here are some questions."
                    if name == "perimeter"
                    else json.dumps(
                        {
                            "pairs": [
                                {
                                    "question": f"What is `{name}` for?",
                                    "answer": f"`{name}` is part of the sample project.",
                                },
                                {"question": f"Where is `{name}`?", "answer": "In the pkg package."},
                            ]
                        }
                    )
                )
                self._send(
                    200,
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
                        ],
                    },
                )

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
