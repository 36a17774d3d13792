"""Request id and access log, as plain ASGI middleware (no per-request task or body copy)."""

from __future__ import annotations

import re
import time
import uuid

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.core.logging import bind_request, clear_request
from server.core.request_context import (
    REQUEST_ID_HEADER,
    set_actor_id,
    set_client_ip,
    set_request_id,
)

log = structlog.get_logger("server.access")

_HEADER = REQUEST_ID_HEADER.lower().encode()
# A caller's id is echoed back and logged, so it must be short and plain.
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _path_template(scope: Scope) -> str:
    """The route's template (/api/studies/{study_id}), never the raw path with its ids.

    The router writes the matched route into the scope it was handed, which is ours.
    """
    route = scope.get("route")
    return str(getattr(route, "path", "unmatched"))


def _client_ip(scope: Scope) -> str | None:
    """The address the rate limits count (their trusted-proxy rule), for the audit trail."""
    limits = getattr(getattr(scope.get("app"), "state", None), "rate_limits", None)
    if limits is not None:
        return str(limits.client_ip(Request(scope)))
    client = scope.get("client")
    return str(client[0]) if client else None


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == _HEADER:
                candidate = value.decode("latin-1")
                request_id = candidate if _VALID_ID.fullmatch(candidate) else ""
                break
        request_id = request_id or uuid.uuid4().hex
        set_request_id(request_id)
        set_client_ip(lambda: _client_ip(scope))
        set_actor_id(None)
        clear_request()
        bind_request(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                if not any(name.lower() == _HEADER for name, _ in headers):
                    headers.append((_HEADER, request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "request",
                method=scope["method"],
                path=_path_template(scope),
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
