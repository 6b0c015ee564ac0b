"""A chat-completions endpoint on 127.0.0.1 for judge tests, answering whatever a test tells it to (raw
bytes, errors, silence); it serves in a thread until the ``with`` block ends."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer


class QuietServer(HTTPServer):
    """An HTTP server that keeps quiet when a client hangs up mid-answer (alignkit stops reading an oversized
    body): socketserver would print that traceback into the output the tests read."""

    def handle_error(self, request, client_address) -> None:
        pass


class Server:
    """A chat endpoint on 127.0.0.1 whose every answer ``respond(handler)`` writes, raw; serves in a
    thread until the ``with`` block ends."""

    def __init__(self, respond):
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                server.requests += 1
                respond(self)

            def log_message(self, *args):
                pass

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def send(handler, status: int, body: bytes, headers=(), length: int | None = None) -> None:
    handler.send_response(status)
    for key, value in headers:
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    handler.end_headers()
    handler.wfile.write(body)


def chat(content: str) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
