"""Which failures a task retries: transient ones (a service down for now), and nothing else.

A transient error is retried with exponential backoff and jitter, up to TASK_MAX_RETRIES; any
other error is a dead letter at once. Worker code raises `TransientError` to ask for a retry;
a domain (which never imports workers) raises its own, listed in transient_types
(`server.redcap.errors.TransientRedcapError`,
`server.notifications.base.TransientDeliveryError`).
"""

from __future__ import annotations

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from server.notifications.base import TransientDeliveryError
from server.redcap.errors import TransientRedcapError


class TransientError(Exception):
    """Worth trying again later. retry_after: the earliest sensible retry, in seconds."""

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def transient_types() -> tuple[type[BaseException], ...]:
    return (
        TransientError,
        TransientRedcapError,
        # A relay's 4xx, Twilio's 429, a push service's 5xx; its retry_after is the hint.
        TransientDeliveryError,
        # The database or the network, gone for now (connection refused or reset, timeouts,
        # a full disk): asyncpg and the sockets under botocore raise OSError subclasses.
        OSError,
        OperationalError,
        InterfaceError,
        PoolTimeoutError,
        # A task that hit the soft time limit was most likely waiting on a hung connection.
        SoftTimeLimitExceeded,
    )


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, transient_types()):
        return True
    # A statement on a connection the database dropped under it.
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def retry_after(exc: BaseException) -> float | None:
    value = getattr(exc, "retry_after", None)
    return float(value) if isinstance(value, int | float) and value > 0 else None
