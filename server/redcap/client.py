"""REDCap through PyCap, made safe for async code: one throttled call at a time, in a thread.

PyCap is synchronous (requests) and never looks at the HTTP status; its `RedcapError` is
requests' `RequestException`. Here a response hook turns REDCap-side failures (5xx, 408, 429)
into `TransientRedcapError` and redirects (never followed) and other unexpected statuses into
`RedcapRejected`, REDCap's own error answers (`{"error": ...}`) become `RedcapRejected` with
REDCap's message, and connection failures and timeouts become `TransientRedcapError`. Of what
the server at the URL sends, only REDCap's own error message reaches an answer: never a body,
nor its status line's wording. Calls go through a session of our own (server.redcap.transport)
that connects only to addresses the production policy passed. Nothing here logs the token.
"""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, TypeVar, cast

import requests
import structlog

from server.core.config import Settings
from server.core.crypto import token_box
from server.redcap.errors import RedcapRejected, TransientRedcapError
from server.redcap.models import RedcapConnection
from server.redcap.throttle import Throttle, server_key
from server.redcap.transport import CheckedProject
from server.redcap.url_policy import UrlPolicy

log = structlog.get_logger(__name__)

T = TypeVar("T")

_TRANSIENT_STATUSES = frozenset({408, 429})
# REDCap answers its own errors with these; anything else 4xx is not REDCap's API speaking.
_REDCAP_ERROR_STATUSES = frozenset({400, 401, 403})
_XML_ERROR = re.compile(r"<error>(.*?)</error>", re.IGNORECASE | re.DOTALL)


class _HttpFailure(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status

    def as_error(self) -> Exception:
        # The standard wording of the status, not the server's: its reason phrase is its own
        # text, as much as its body (an HTML error page from a proxy stays with the proxy).
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = ""
        text = f"REDCap answered HTTP {self.status} {phrase}".strip()
        if self.status >= 500 or self.status in _TRANSIENT_STATUSES:
            return TransientRedcapError(text, details={"redcap_status": self.status})
        if 300 <= self.status < 400:
            return RedcapRejected(
                f"{text}, a redirect, which is not followed: give the API URL REDCap answers "
                "at itself (https, and the exact path).",
                redcap_status=self.status,
            )
        return RedcapRejected(f"{text}: is the API URL right?", redcap_status=self.status)


def redcap_message(body: Any) -> str | None:
    """REDCap's error text from what PyCap raised with (a decoded JSON object or text)."""
    if isinstance(body, dict):
        error = body.get("error")
        return str(error) if error is not None else None
    if isinstance(body, str):
        match = _XML_ERROR.search(body)
        if match:
            return html.unescape(match.group(1)).strip()
        if body.lower().startswith("error:"):
            return body[len("error:") :].strip()
    return None


class RedcapClient:
    """One REDCap project, as one API token sees it."""

    def __init__(
        self,
        *,
        api_url: str,
        token: str,
        settings: Settings,
        max_calls_per_minute: int,
        max_wait: float | None = None,
    ) -> None:
        self.api_url = api_url
        self.server = server_key(api_url)
        self.max_calls_per_minute = max_calls_per_minute
        # Interactive requests give up (503) rather than hang on a used-up budget.
        self.max_wait = max_wait
        self.timeout = settings.REDCAP_TIMEOUT_SECONDS
        self.throttle = Throttle(settings)
        self.last_status: int | None = None
        self._metadata: list[dict[str, Any]] | None = None
        policy = UrlPolicy.from_settings(settings)
        # The scheme now; the addresses on each connection the session opens.
        policy.check_url(api_url)
        try:
            self._project = CheckedProject(
                api_url,
                token,
                policy=policy,
                timeout=(settings.REDCAP_CONNECT_TIMEOUT_SECONDS, settings.REDCAP_TIMEOUT_SECONDS),
                hooks={"response": [self._on_response]},
                # A redirect answers as itself (an error naming it): a token never follows one.
                allow_redirects=False,
            )
        except AssertionError:
            # PyCap's own message would quote the token.
            raise RedcapRejected(
                "The API URL must end with /api/ and the token be 32 characters."
            ) from None

    # ----- plumbing ----------------------------------------------------------------------------
    def _on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.last_status = response.status_code
        status = response.status_code
        if (
            status >= 500
            or status in _TRANSIENT_STATUSES
            or 300 <= status < 400
            or (status >= 400 and status not in _REDCAP_ERROR_STATUSES)
        ):
            response.close()
            raise _HttpFailure(status)

    def _run(self, fn: Callable[[], T]) -> T:
        self.last_status = None
        try:
            return fn()
        except _HttpFailure as exc:
            raise exc.as_error() from None
        except requests.Timeout:
            raise TransientRedcapError(
                f"REDCap did not answer within {self.timeout:g} s (timeout)."
            ) from None
        except requests.ConnectionError as exc:
            raise TransientRedcapError(
                f"REDCap could not be reached ({type(exc).__name__})."
            ) from None
        except requests.JSONDecodeError:
            raise RedcapRejected(
                f"REDCap's answer (HTTP {self.last_status}) was not an API answer: "
                "is the API URL right?",
                redcap_status=self.last_status,
            ) from None
        except requests.RequestException as exc:  # PyCap's RedcapError
            message = redcap_message(exc.args[0] if exc.args else None)
            if message is None:
                raise TransientRedcapError(f"REDCap call failed ({type(exc).__name__}).") from None
            raise RedcapRejected(message, redcap_status=self.last_status) from None

    async def _call(self, content: str, fn: Callable[[], T]) -> T:
        await self.throttle.acquire(self.api_url, self.max_calls_per_minute, max_wait=self.max_wait)
        started = time.monotonic()
        outcome = "ok"
        try:
            # requests' timeout bounds each read; this bounds the whole call.
            return await asyncio.wait_for(
                asyncio.to_thread(self._run, fn), timeout=self.timeout * 2 + 5
            )
        except TimeoutError:
            outcome = "timeout"
            raise TransientRedcapError(
                f"REDCap did not answer within {self.timeout * 2 + 5:g} s (timeout)."
            ) from None
        except (RedcapRejected, TransientRedcapError) as exc:
            outcome = type(exc).__name__
            raise
        finally:
            log.info(
                "redcap_call",
                server=self.server,
                content=content,
                outcome=outcome,
                http_status=self.last_status,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            )

    # ----- calls -------------------------------------------------------------------------------
    async def project_info(self) -> dict[str, Any]:
        info = await self._call("project", self._project.export_project_info)
        if not isinstance(info, dict):
            # JSON, but not REDCap's (a list, a string): said so, never shown.
            raise RedcapRejected(
                "REDCap's answer was not an API answer: is the API URL right?",
                redcap_status=self.last_status,
            )
        return info

    async def version(self) -> str | None:
        version = await self._call("version", self._project.export_version)
        return str(version) if version is not None else None

    async def metadata(self) -> list[dict[str, Any]]:
        if self._metadata is None:
            # The property caches it inside PyCap too, so exports need not fetch it again.
            self._metadata = await self._call("metadata", lambda: self._project.metadata)
        return self._metadata

    async def field_names(self) -> list[dict[str, Any]]:
        names = await self._call("exportFieldNames", self._project.export_field_names)
        return cast("list[dict[str, Any]]", names)

    async def form_event_mapping(self) -> list[dict[str, Any]]:
        mapping = await self._call(
            "formEventMapping", self._project.export_instrument_event_mappings
        )
        return cast("list[dict[str, Any]]", mapping)

    async def repeating(self) -> list[dict[str, Any]]:
        rows = await self._call(
            "repeatingFormsEvents", self._project.export_repeating_instruments_events
        )
        return cast("list[dict[str, Any]]", rows)

    async def export_records(
        self,
        *,
        records: list[str] | None = None,
        fields: list[str] | None = None,
        forms: list[str] | None = None,
        export_data_access_groups: bool = False,
        export_blank_for_gray_form_status: bool = False,
    ) -> list[dict[str, Any]]:
        await self.metadata()  # PyCap adds the record id field: it must know it without a call

        def export() -> Any:
            return self._project.export_records(
                records=records,
                fields=fields,
                forms=forms,
                export_data_access_groups=export_data_access_groups,
                export_blank_for_gray_form_status=export_blank_for_gray_form_status or None,
            )

        return cast("list[dict[str, Any]]", await self._call("record", export))

    async def import_records(self, rows: list[dict[str, Any]]) -> int:
        """Import rows (overwrite=normal: blanks never erase); the count REDCap reports."""

        def do_import() -> Any:
            return self._project.import_records(
                rows, overwrite="normal", return_content="count", return_format_type="json"
            )

        answer = await self._call("record", do_import)
        if isinstance(answer, dict):
            return int(answer.get("count", 0))
        return 0


# Interactive requests (connection test, mapping save, participant import) wait at most this
# long for a throttle slot, then answer 503.
INTERACTIVE_MAX_WAIT = 15.0


def client_for(
    connection: RedcapConnection, settings: Settings, *, interactive: bool
) -> RedcapClient:
    """A client for a stored connection, its token decrypted for this call only."""
    return RedcapClient(
        api_url=connection.api_url,
        token=token_box(settings).decrypt(connection.token_encrypted),
        settings=settings,
        max_calls_per_minute=connection.max_calls_per_minute,
        max_wait=INTERACTIVE_MAX_WAIT if interactive else None,
    )
