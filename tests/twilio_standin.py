"""A stand-in for Twilio's Messages API on 127.0.0.1 and a free port (stdlib, its own thread).

POST /2010-04-01/Accounts/{sid}/Messages.json answers as Twilio does: 201 with the created
message, or the next scripted refusal (fail_next). Every request is kept, its form decoded.
Point TWILIO_API_BASE at `standin.base_url`.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

_MESSAGES = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages\.json$")

INVALID_TO = {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400}
TOO_MANY = {"code": 20429, "message": "Too Many Requests", "status": 429}


@dataclass
class Received:
    account_sid: str
    form: dict[str, str]
    authorization: str


@dataclass
class Refusal:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class TwilioStandin(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[Received] = []
        self._refusals: list[Refusal] = []
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def fail_next(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        """The next request is answered `status` with this JSON body (and headers)."""
        with self._lock:
            self._refusals.append(Refusal(status, body, headers or {}))

    def _next_refusal(self) -> Refusal | None:
        with self._lock:
            return self._refusals.pop(0) if self._refusals else None


class _Handler(BaseHTTPRequestHandler):
    server: TwilioStandin

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        match = _MESSAGES.match(self.path)
        if match is None:
            self._answer(404, {"code": 20404, "message": "The requested resource was not found"})
            return
        form = {key: values[0] for key, values in parse_qs(raw).items()}
        self.server.received.append(
            Received(match["sid"], form, self.headers.get("Authorization", ""))
        )
        refusal = self.server._next_refusal()
        if refusal is not None:
            self._answer(refusal.status, refusal.body, refusal.headers)
            return
        self._answer(
            201,
            {
                "sid": "SM" + uuid.uuid4().hex,
                "account_sid": match["sid"],
                "to": form.get("To"),
                "from": form.get("From"),
                "body": form.get("Body"),
                "status": "queued",
                "num_segments": "1",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "error_code": None,
                "error_message": None,
            },
        )

    def _answer(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def twilio_standin() -> Iterator[TwilioStandin]:
    server = TwilioStandin()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
