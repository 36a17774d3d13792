"""The HTTP side: a ThreadingHTTPServer in a background thread speaking REDCap's API."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .api import Api
from .demo import classic_project
from .formats import Params, Reply, error_format, error_reply
from .knobs import FAILURE_PAGE, CallRecord, Knobs
from .project import ProjectModel
from .store import RecordStore

API_PATH = "/api/"
CONTROL_PATH = "/__control__"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (bind to port 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _html(status: int) -> bytes:
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    return FAILURE_PAGE.format(status=status, reason=reason).encode()


def _action(params: Params) -> str:
    if params.get("action") == "delete":
        return "delete"
    return "import" if "data" in params else (params.get("action") or "export")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], standin: RedcapStandin) -> None:
        self.standin = standin
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Cut every open client connection, as a crashed server would."""
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server_version = "Apache"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        return

    def send(self, status: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        body = self._body()
        if path == API_PATH:
            self.server.standin.serve_api(self, body)
        elif path == CONTROL_PATH:
            try:
                status, answer = self.server.standin.control(json.loads(body or b"{}"))
            except (ValueError, TypeError) as exc:
                status, answer = 400, {"error": f"bad control command: {exc}"}
            self.send(status, json.dumps(answer).encode(), "application/json")
        else:
            self.send(404, _html(404), "text/html; charset=iso-8859-1")

    def _not_allowed(self) -> None:
        status = 405 if urlsplit(self.path).path == API_PATH else 404
        self.send(status, _html(status), "text/html; charset=iso-8859-1")

    do_GET = do_PUT = do_DELETE = do_PATCH = _not_allowed  # noqa: N815


class RedcapStandin:
    """A REDCap API stand-in served from a background thread.

    >>> with RedcapStandin(classic_project()) as standin:
    ...     Project(standin.url, standin.token).export_records()
    """

    def __init__(
        self,
        project: ProjectModel | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        state_file: str | Path | None = None,
    ) -> None:
        self.project = project if project is not None else classic_project()
        self.host = host
        self.port = port
        self.store = RecordStore(self.project, Path(state_file) if state_file else None)
        self.api = Api(self.project, self.store)
        self.knobs = Knobs()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        # Called (on the server's thread) with each API call's `content` as it arrives, before
        # it is answered: a test looks at the world at the moment REDCap is being asked.
        self.on_call: Callable[[str | None], None] | None = None

    # ----- lifecycle ---------------------------------------------------------------------------
    def start(self) -> RedcapStandin:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self.host, self.port), self)
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"redcap-standin-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Go down: stop listening and cut open connections. Stored records are kept."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.drop_connections()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def restart(self) -> RedcapStandin:
        self.stop()
        return self.start()

    @property
    def is_running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> RedcapStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- addresses ---------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """What to give `redcap.Project` (ends in /api/)."""
        return self.base_url + API_PATH

    @property
    def token(self) -> str:
        return self.project.import_token

    @property
    def readonly_token(self) -> str:
        return self.project.readonly_token

    # ----- knobs -------------------------------------------------------------------------------
    @property
    def delay_seconds(self) -> float:
        return self.knobs.delay_seconds

    @delay_seconds.setter
    def delay_seconds(self, value: float) -> None:
        self.knobs.delay_seconds = value

    @property
    def fail_with_status(self) -> int | None:
        return self.knobs.fail_with_status

    @fail_with_status.setter
    def fail_with_status(self, status: int | None) -> None:
        self.knobs.fail(status)

    def fail(
        self,
        status: int,
        times: int | None = None,
        *,
        after_processing: bool = False,
        content: str | None = None,
    ) -> None:
        """Answer the next `times` calls (every call if None) with `status` and an HTML page.

        With after_processing=True the call is carried out first (an import is stored) and
        only the answer is lost, as behind a proxy that times out. With `content` ("record",
        say), only calls of that content fail: a client's look-ups before them go through.
        """
        self.knobs.fail(status, times, after_processing=after_processing, content=content)

    def clear_failure(self) -> None:
        self.knobs.clear_failure()

    @property
    def calls(self) -> list[CallRecord]:
        return self.knobs.calls

    @property
    def hits(self) -> int:
        return self.knobs.hits

    @property
    def records(self) -> list[dict[str, Any]]:
        """Stored rows: key columns plus the values actually stored."""
        return self.store.flat_rows()

    def reshape(self, project: ProjectModel) -> None:
        """The project's design changes under the same URL and tokens (an admin made it
        longitudinal, say): REDCap answers for `project` from now on; stored rows are kept."""
        project = replace(project, tokens=self.project.tokens)
        self.store.adopt(project)
        self.project, self.api = project, Api(project, self.store)

    def reset(self) -> None:
        """Back to the project's initial records; knobs and call log cleared."""
        self.store.reset()
        self.knobs.reset()

    # ----- request handling --------------------------------------------------------------------
    def serve_api(self, handler: _Handler, body: bytes) -> None:
        started = time.time()
        self.knobs.count_hit()
        params = Params(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if self.on_call is not None:
            self.on_call(params.get("content"))
        delay = self.knobs.delay_seconds
        if delay and self._stopping.wait(delay):
            handler.close_connection = True  # went down while "busy": no answer at all
            return
        importing = params.get("content") == "record" and _action(params) == "import"
        if importing and not self.knobs.wait_if_held(self._stopping):
            handler.close_connection = True
            return
        failure = self.knobs.take_failure(params.get("content"))
        reply: Reply | None = None
        error: str | None = None
        if failure is None or failure.after_processing:
            if "multipart/form-data" in (handler.headers.get("Content-Type") or ""):
                message = "The REDCap stand-in does not accept multipart (file upload) calls"
                reply = error_reply(400, message, error_format(params))
            else:
                reply = self.api.handle(params)
        if failure is not None:
            status, body = failure.status, _html(failure.status)
            content_type, error = "text/html; charset=iso-8859-1", "injected failure"
        else:
            assert reply is not None
            status, body, content_type = reply.status, reply.body, reply.content_type
            error = reply.body.decode() if reply.status >= 400 else None
        # Logged before answering, so a client that has its answer also sees its call logged.
        self.knobs.log(
            CallRecord(
                content=params.get("content"),
                action=_action(params),
                rows=reply.rows if reply is not None and reply.status < 400 else 0,
                status=status,
                started_at=started,
                finished_at=time.time(),
                error=error,
                warnings=list(reply.warnings) if reply is not None else [],
            )
        )
        handler.send(status, body, content_type)

    def control(self, command: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The /__control__ endpoint, for a stand-in running in another process."""
        op = command.get("op", "state")
        if op == "configure":
            if "delay_seconds" in command:
                self.knobs.delay_seconds = float(command["delay_seconds"])
            if "hold_imports" in command:
                self.knobs.hold_imports(bool(command["hold_imports"]))
            if "fail_with_status" in command:
                self.knobs.fail(
                    command["fail_with_status"],
                    command.get("times"),
                    after_processing=bool(command.get("after_processing", False)),
                    content=command.get("content"),
                )
        elif op == "clear_failure":
            self.knobs.clear_failure()
        elif op == "reset":
            self.reset()
        elif op != "state":
            return 400, {"error": f"unknown op {op!r}"}
        return 200, {**self.knobs.snapshot(), "records": self.records}
