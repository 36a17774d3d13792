"""structlog set-up: JSON in production, readable in development, PHI and secrets stripped."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import IO, Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from server.core.config import Settings

REDACTED = "[redacted]"

# Keys whose values are PHI or secrets wherever they appear, at any depth.
PHI_KEYS = frozenset(
    {
        "email",
        "phone",
        "phone_number",
        "name",
        "first_name",
        "last_name",
        "full_name",
        "address",
        "date_of_birth",
        "dob",
        "password",
        "new_password",
        "password_hash",
        "token",
        "access_token",
        "refresh_token",
        "authorization",
        "cookie",
        "secret",
        "api_token",
        "jwt_secret_key",
        "access_code",
        "contact",
        "contacts",
        "username",
    }
)
_SECRET_HINT = re.compile(r"(password|secret|token|email|phone|authorization)", re.IGNORECASE)
# Values that look like PHI even under an innocent key (an email inside a message, say).
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_BEARER_RE = re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+")
# Only the unambiguous international form: bare digit runs are ids, dates and timings.
_PHONE_RE = re.compile(r"(?<![\w-])\+\d[\d\s().-]{6,}\d(?![\w-])")


def _is_phi_key(key: str) -> bool:
    lowered = key.lower()
    return lowered in PHI_KEYS or bool(_SECRET_HINT.search(lowered))


def _scrub_text(text: str) -> str:
    text = _BEARER_RE.sub("Bearer " + REDACTED, text)
    text = _EMAIL_RE.sub(REDACTED, text)
    return _PHONE_RE.sub(REDACTED, text)


def scrub(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and _is_phi_key(k) else scrub(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return _scrub_text(value)
    return value


# Keys structlog itself writes; their values are ours, not user input.
_STRUCTLOG_KEYS = frozenset({"timestamp", "level", "logger", "request_id", "method", "path"})


def scrub_phi(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Drop PHI keys and mask PHI-shaped values before anything is rendered."""
    for key in list(event_dict):
        if key in _STRUCTLOG_KEYS:
            continue
        if _is_phi_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = scrub(event_dict[key])
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        scrub_phi,
    ]


def build_handler(settings: Settings, stream: IO[str]) -> logging.Handler:
    """A handler rendering both structlog and standard-library records, scrubbed of PHI."""
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if settings.log_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    return handler


def configure_logging(settings: Settings) -> None:
    level = logging.getLevelName(settings.LOG_LEVEL.upper())
    structlog.configure(
        processors=[*_shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = build_handler(settings, sys.stdout)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access",):
        # Our middleware logs each request once, with the path template and no query string.
        logging.getLogger(noisy).handlers[:] = []
        logging.getLogger(noisy).propagate = False


def bind_request(**values: Any) -> None:
    structlog.contextvars.bind_contextvars(**values)


def clear_request() -> None:
    structlog.contextvars.clear_contextvars()
