"""Who and what the current request is (correlation id, client address, signed-in staff user),
readable anywhere in the request: the logs and the audit trail take them from here."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextvars import ContextVar

REQUEST_ID_HEADER = "X-Request-ID"

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def get_request_id() -> str | None:
    return _request_id.get()


def set_request_id(value: str | None) -> None:
    _request_id.set(value)


# How to find the caller's address, not the address itself: only the audit trail asks, and
# the requests it records are few next to those of the ingest path.
_client_ip: ContextVar[Callable[[], str | None] | None] = ContextVar("client_ip", default=None)


def get_client_ip() -> str | None:
    """The caller's address as the rate limits see it (X-Forwarded-For from trusted proxies
    only); None outside a request (a worker, the CLI)."""
    resolve = _client_ip.get()
    return None if resolve is None else resolve()


def set_client_ip(resolve: Callable[[], str | None] | None) -> None:
    _client_ip.set(resolve)


_actor_id: ContextVar[uuid.UUID | None] = ContextVar("actor_id", default=None)


def get_actor_id() -> uuid.UUID | None:
    """The staff user the request authenticated as (server.auth.deps), if any."""
    return _actor_id.get()


def set_actor_id(value: uuid.UUID | None) -> None:
    _actor_id.set(value)
