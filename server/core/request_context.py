"""The current request's correlation id and client address, readable anywhere in the request."""

from __future__ import annotations

from contextvars import ContextVar

REQUEST_ID_HEADER = "X-Request-ID"

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def get_request_id() -> str | None:
    return _request_id.get()


def set_request_id(value: str | None) -> None:
    _request_id.set(value)


_client_ip: ContextVar[str | None] = ContextVar("client_ip", default=None)


def get_client_ip() -> str | None:
    """The caller's address as the rate limits see it (X-Forwarded-For from trusted proxies
    only); None outside a request (a worker, the CLI)."""
    return _client_ip.get()


def set_client_ip(value: str | None) -> None:
    _client_ip.set(value)
