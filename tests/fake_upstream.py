"""A server at a REDCap URL that is not REDCap: it answers every POST with one fixed answer
(a redirect, a proxy's HTML error page) and counts the connections and requests it gets.
127.0.0.1 only, on a free port."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Answer:
    status: int = 200
    reason: str | None = None  # the status line's wording; None for the standard one
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class FakeUpstream(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answer: Answer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = answer
        self.connections = 0
        self.requests: list[str] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}/api/"

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections += 1  # counted before anything is read: a TLS hello counts too
        super().process_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: FakeUpstream

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append(self.path)
        answer = self.server.answer
        self.send_response(answer.status, answer.reason)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def fake_upstream(answer: Answer | None = None) -> Iterator[FakeUpstream]:
    server = FakeUpstream(answer or Answer())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
