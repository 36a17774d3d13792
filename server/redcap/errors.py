"""What can go wrong talking to REDCap, as domain errors (502 in the envelope on a route)."""

from __future__ import annotations

from typing import Any

from server.core.errors import AppError, ServiceUnavailable


class RedcapCallError(AppError):
    """A REDCap call did not give an answer we can use. Never a 500: REDCap's side, not ours."""

    status_code = 502
    error_code = "redcap_error"
    message = "REDCap did not answer as expected."


class RedcapRejected(RedcapCallError):
    """REDCap answered with an error of its own (bad token, missing right, invalid data).

    `message` is REDCap's own text; `redcap_status` the HTTP status it came with.
    """

    def __init__(self, message: str, *, redcap_status: int | None = None) -> None:
        self.redcap_message = message
        self.redcap_status = redcap_status
        super().__init__(message, details={"redcap_status": redcap_status})


class RedcapUrlRefused(RedcapRejected):
    """The connection's API URL leads where this server does not send a token (an address
    inside the network, or plain http, in production): refused before anything is sent.

    A RedcapRejected, so a sync marks the submissions failed (resync once the URL or
    REDCAP_ALLOWED_HOSTS is fixed) rather than retrying; 422, since no REDCap answered.
    """

    status_code = 422
    error_code = "redcap_url_refused"

    def __init__(self, message: str, *, host: str) -> None:
        super().__init__(message)
        self.host = host
        self.details = {"host": host}


class TransientRedcapError(RedcapCallError):
    """REDCap could not be reached or failed on its side (timeout, refused, HTTP 5xx).

    Worth retrying later: the worker tier retries tasks that raise it, with backoff (no
    sooner than `retry_after` seconds, when set).
    """

    def __init__(
        self, message: str, *, details: Any = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


class RedcapBusy(ServiceUnavailable):
    """The call budget for this REDCap server is used up for now (an interactive request)."""

    error_code = "redcap_busy"
    message = "Too many calls to this REDCap server just now; try again shortly."
