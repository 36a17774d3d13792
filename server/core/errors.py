"""Domain errors that carry their status, and the one JSON envelope every error uses."""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.core.request_context import REQUEST_ID_HEADER, get_request_id

log = structlog.get_logger(__name__)


class AppError(Exception):
    status_code = 400
    error_code = "bad_request"
    message = "The request could not be processed."

    def __init__(
        self,
        message: str | None = None,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
        error_code: str | None = None,
    ) -> None:
        self.message = message or self.message
        self.details = details
        self.headers = headers
        if error_code:
            self.error_code = error_code
        super().__init__(self.message)


class Unauthorized(AppError):
    status_code = 401
    error_code = "unauthorized"
    message = "Authentication is required."

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kwargs)


class Forbidden(AppError):
    status_code = 403
    error_code = "forbidden"
    message = "You do not have permission to do this."


class NotFound(AppError):
    status_code = 404
    error_code = "not_found"
    message = "Not found."


class Conflict(AppError):
    status_code = 409
    error_code = "conflict"
    message = "This conflicts with existing data."


class Unprocessable(AppError):
    status_code = 422
    error_code = "validation_error"
    message = "The request is not valid."


class PayloadTooLarge(AppError):
    status_code = 413
    error_code = "payload_too_large"
    message = "The request body is too large."


class RateLimited(AppError):
    status_code = 429
    error_code = "rate_limited"
    message = "Too many requests; try again later."


class ServiceUnavailable(AppError):
    status_code = 503
    error_code = "service_unavailable"
    message = "A service this needs is unavailable."


class ErrorEnvelope(BaseModel):
    """The body of every error answer, whatever its status."""

    error_code: str = Field(description="Stable and machine-readable, e.g. validation_error.")
    message: str = Field(description="What went wrong, for a person.")
    correlation_id: str | None = Field(
        description="The request's id (also the X-Request-ID header), to quote to support."
    )
    details: Any = Field(
        description="For validation errors a list of {loc, msg, type}; otherwise an object "
        "specific to the error_code, or null."
    )


_ERROR_DESCRIPTIONS = {
    400: "Bad request",
    401: "No token, or a token that is invalid, expired or of the wrong kind",
    403: "Not allowed for this principal",
    404: "Not found",
    409: "Conflicts with existing data",
    413: "The request body is too large",
    415: "Unsupported Content-Encoding (gzip and identity are accepted)",
    422: "The request is not valid (details name each place)",
    429: "Rate limited (see Retry-After)",
}


def error_responses(*status_codes: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status with the envelope schema. A description given as
    s409="..." replaces the generic one."""
    return {
        code: {
            "model": ErrorEnvelope,
            "description": descriptions.get(f"s{code}", _ERROR_DESCRIPTIONS[code]),
        }
        for code in status_codes
    }


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def envelope(
    status_code: int,
    error_code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    request_id = get_request_id()
    body = {
        "error_code": error_code,
        "message": message,
        "correlation_id": request_id,
        "details": details,
    }
    headers = dict(headers or {})
    if request_id:
        # The 500 path answers from outside the request-id middleware, so set it here too.
        headers.setdefault(REQUEST_ID_HEADER, request_id)
    return JSONResponse(body, status_code=status_code, headers=headers)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # The input is left out: it may hold a password or a participant's contact details.
    return [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]


def error_response(exc: AppError) -> JSONResponse:
    return envelope(exc.status_code, exc.error_code, exc.message, exc.details, exc.headers)


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return error_response(exc)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return envelope(422, "validation_error", "The request is not valid.", _validation_details(exc))


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return envelope(exc.status_code, code, message, None, getattr(exc, "headers", None))


def _sqlstate(exc: BaseException) -> str | None:
    """The PostgreSQL error code behind a driver exception, raw or wrapped by SQLAlchemy."""
    for candidate in (exc, getattr(exc, "orig", None), getattr(exc, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None)
        if isinstance(code, str):
            return code
    return None


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    # SQLSTATE class 22, "data exception": the database refused a value the request carried
    # (a NUL character, a number past the column's range). Bad input, so 422 and not 500.
    code = _sqlstate(exc)
    if code is not None and code.startswith("22"):
        log.info("request_value_refused_by_database", sqlstate=code)
        return envelope(
            422,
            "invalid_value",
            "A value in the request cannot be stored (a NUL character, or a number out of range).",
            {"sqlstate": code},
        )
    return await _unhandled(request, exc)


async def _unhandled(_: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled_error", exc_type=type(exc).__name__, exc_info=exc)
    return envelope(500, "internal_error", "An unexpected error occurred.")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Database errors are answered here rather than by the last-resort handler, so a refused
    # value is a plain 422 and not a server exception.
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(asyncpg.PostgresError, _database_error)
    app.add_exception_handler(Exception, _unhandled)
