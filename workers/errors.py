"""Which failures a task retries: transient ones (a service down for now), and nothing else.

A transient error is retried with exponential backoff and jitter, up to TASK_MAX_RETRIES; any
other error is a dead letter at once. Domains raise `TransientError` (or a subclass, such as
`server.redcap.errors.TransientRedcapError`) to ask for a retry.
"""

from __future__ import annotations

import importlib

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError


class TransientError(Exception):
    """Worth trying again later. retry_after: the earliest sensible retry, in seconds."""

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# Module and class the REDCap domain defines; looked up lazily so this works before it exists.
_REDCAP_ERRORS = "server.redcap.errors"
_REDCAP_TRANSIENT = "TransientRedcapError"


def _redcap_transient() -> tuple[type[BaseException], ...]:
    try:
        module = importlib.import_module(_REDCAP_ERRORS)
    except ModuleNotFoundError as exc:
        if exc.name != _REDCAP_ERRORS:
            raise  # the module exists but imports something missing: a real bug
        return ()
    cls = getattr(module, _REDCAP_TRANSIENT, None)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        return (cls,)
    return ()


def transient_types() -> tuple[type[BaseException], ...]:
    return (
        TransientError,
        *_redcap_transient(),
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
