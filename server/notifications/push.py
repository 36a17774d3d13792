"""Web Push (pywebpush, VAPID-signed), its blocking call in a thread.

Outgoing.to is the browser's subscription (the JSON of PushSubscription.toJSON()). The push
service answers 201; 404 or 410 means the subscription is gone for good (the participant
unsubscribed or cleared the browser), 429, a 5xx or no answer is worth a retry.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import requests
from py_vapid import Vapid
from pywebpush import WebPushException, webpush

from server.core.config import Settings
from server.notifications.base import (
    DeliveryError,
    Outgoing,
    PermanentDeliveryError,
    Sent,
    TransientDeliveryError,
)

# Connect and read, each (pywebpush's own default is hours).
_TIMEOUT_SECONDS = 30.0
# How long the push service keeps a message for an offline device: a reminder a day late is
# still a reminder, one a week late is noise.
_TTL_SECONDS = 24 * 3600


def load_vapid_key(private_key: str) -> Vapid:
    """The key as PEM, or base64url (raw 32 bytes or DER), the forms VAPID tools print."""
    text = private_key.strip()
    if text.startswith("-----BEGIN"):
        return Vapid.from_pem(text.encode())
    return Vapid.from_string(private_key=text)


def _subscription(to: str) -> dict[str, Any]:
    try:
        value = json.loads(to)
    except ValueError:
        value = None
    keys = value.get("keys") if isinstance(value, dict) else None
    if not (
        isinstance(value, dict)
        and isinstance(value.get("endpoint"), str)
        and isinstance(keys, dict)
        and {"p256dh", "auth"} <= keys.keys()
    ):
        raise PermanentDeliveryError("invalid push subscription")
    return value


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the task's own backoff will do


def classify(exc: WebPushException) -> DeliveryError:
    # The exception's text carries the push service's whole answer; the status is enough.
    status = exc.status_code
    if status is None:
        # pywebpush refused before sending (a subscription without keys, say).
        return PermanentDeliveryError("invalid push subscription")
    if status in (404, 410):
        return PermanentDeliveryError(f"HTTP {status}: subscription expired")
    if status == 429 or status >= 500:
        return TransientDeliveryError(
            f"push service HTTP {status}", retry_after=_retry_after(exc.retry_after)
        )
    return PermanentDeliveryError(f"push service refused: HTTP {status}")


class WebPushProvider:
    name = "webpush"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._vapid: Vapid | None = None

    def _key(self) -> Vapid:
        if self._vapid is None:
            try:
                self._vapid = load_vapid_key(self._settings.VAPID_PRIVATE_KEY.get_secret_value())
            except Exception as exc:  # py_vapid raises what its decoders raise
                raise PermanentDeliveryError("VAPID_PRIVATE_KEY is missing or invalid") from exc
        return self._vapid

    def _send(self, message: Outgoing) -> None:
        subscription = _subscription(message.to)
        payload = json.dumps({"title": message.subject, "body": message.body})
        try:
            webpush(
                subscription_info=subscription,
                data=payload,
                vapid_private_key=self._key(),
                # A fresh dict each time: pywebpush writes aud and exp into it.
                vapid_claims={"sub": self._settings.VAPID_SUBJECT},
                timeout=_TIMEOUT_SECONDS,
                ttl=_TTL_SECONDS,
            )
        except WebPushException as exc:
            raise classify(exc) from exc
        except (ValueError, TypeError) as exc:
            # Keys that do not decode to a P-256 point and an auth secret.
            raise PermanentDeliveryError("invalid push subscription") from exc
        except requests.RequestException as exc:
            # Its text names the endpoint, which identifies the participant's browser.
            raise TransientDeliveryError(f"push service unreachable: {type(exc).__name__}") from exc

    async def send(self, message: Outgoing) -> Sent:
        await asyncio.to_thread(self._send, message)
        return Sent("webpush", None)
