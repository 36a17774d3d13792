"""SMS through Twilio's REST API (the official client, its blocking call in a thread).

HTTP 429, a 5xx or no answer at all is transient (with Twilio's Retry-After when it sends
one); any other refusal is permanent, with Twilio's error code and message as the reason
("21211 Invalid 'To' Phone Number"), the number itself taken out.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import requests
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from server.core.config import Settings
from server.notifications.base import (
    DeliveryError,
    Outgoing,
    PermanentDeliveryError,
    Sent,
    TransientDeliveryError,
)

TWILIO_API = "https://api.twilio.com"
# Where Twilio reports what became of a message (server.reminders.callbacks serves it).
STATUS_CALLBACK_PATH = "/api/reminders/callbacks/twilio"
# The prefix Twilio's client puts before each error's own message.
_CLIENT_PREFIX = "Unable to create record: "
# Connect and read, each: Twilio answers in well under a second when it is there at all.
_TIMEOUT_SECONDS = 30.0
# Twilio's client narrates every request at INFO (a dozen lines: URL, headers); ours says
# what happened to the message once, on its row.
_http_log = logging.getLogger(__name__ + ".http")
_http_log.setLevel(logging.WARNING)


class _TwilioHttp(TwilioHttpClient):  # type: ignore[misc]  # twilio ships no types
    """Twilio's own HTTP client, sent to another base URL (a stand-in), and keeping the last
    answer's headers: the client's exceptions drop them, and Retry-After is among them."""

    def __init__(self, *, api_base: str, timeout: float) -> None:
        super().__init__(timeout=timeout, logger=_http_log)
        self._api_base = api_base.rstrip("/")
        self.last_headers: dict[str, str] = {}

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        if self._api_base and url.startswith(TWILIO_API):
            url = self._api_base + url[len(TWILIO_API) :]
        response = super().request(method, url, *args, **kwargs)
        self.last_headers = dict(response.headers or {})
        return response


def status_callback_url(settings: Settings) -> str:
    """The full public URL Twilio posts delivery reports to, and signs them over."""
    return settings.PUBLIC_BASE_URL.rstrip("/") + STATUS_CALLBACK_PATH


def _retry_after(headers: dict[str, str]) -> float | None:
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the task's own backoff will do


def _without_number(text: str, number: str) -> str:
    # Twilio's messages quote the number ("The 'To' number +1500... is not valid").
    for form in (number, number.lstrip("+")):
        if form:
            text = text.replace(form, "[recipient]")
    return text


def classify(
    exc: TwilioRestException | TwilioServiceException, *, to: str, retry_after: float | None
) -> DeliveryError:
    if isinstance(exc, TwilioServiceException):
        message = exc.detail or exc.title
    else:
        message = exc.msg.removeprefix(_CLIENT_PREFIX)
    reason = _without_number(f"{exc.code} {message}".strip(), to)
    if exc.status == 429 or exc.status >= 500:
        return TransientDeliveryError(f"HTTP {exc.status}: {reason}", retry_after=retry_after)
    return PermanentDeliveryError(reason)


class TwilioSmsProvider:
    name = "twilio"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def _send(self, message: Outgoing) -> str:
        s = self._settings
        http = _TwilioHttp(api_base=s.TWILIO_API_BASE, timeout=_TIMEOUT_SECONDS)
        client = Client(
            username=s.TWILIO_ACCOUNT_SID,
            password=s.TWILIO_AUTH_TOKEN.get_secret_value(),
            account_sid=s.TWILIO_ACCOUNT_SID,
            http_client=http,
        )
        options: dict[str, str] = {}
        if s.PUBLIC_BASE_URL:
            options["status_callback"] = status_callback_url(s)
        try:
            created = client.messages.create(
                to=message.to, from_=s.TWILIO_FROM_NUMBER, body=message.body, **options
            )
        except (TwilioRestException, TwilioServiceException) as exc:
            raise classify(exc, to=message.to, retry_after=_retry_after(http.last_headers)) from exc
        except requests.RequestException as exc:
            # Refused, reset, timed out: the exception's text names the host, the type does not.
            raise TransientDeliveryError(f"Twilio unreachable: {type(exc).__name__}") from exc
        finally:
            if http.session is not None:
                http.session.close()
        return str(created.sid)

    async def send(self, message: Outgoing) -> Sent:
        sid = await asyncio.to_thread(self._send, message)
        return Sent("twilio", sid)
