"""The one provider interface every channel sends through (email, SMS, push, the log).

A provider gets one Outgoing (already rendered, its address already decrypted by the sending
task) and either returns Sent or raises: TransientDeliveryError when trying again later may
work (a 4xx SMTP reply, a timeout, HTTP 429/5xx), PermanentDeliveryError when it will not (a
5xx SMTP reply, an invalid number). Their `reason` is the provider's own words, kept on the
message row for the coordinator; it never holds the address or the text sent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Outgoing:
    message_id: uuid.UUID  # the reminder_messages row: Message-ID header, idempotency key
    channel: str  # "email" | "sms" | "push"
    to: str  # address, E.164 number, or a Web Push subscription (JSON)
    subject: str
    body: str


@dataclass(frozen=True)
class Sent:
    provider: str
    provider_message_id: str | None = None


class DeliveryError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason[:1000]


class TransientDeliveryError(DeliveryError):
    """Worth trying again after a backoff (retry_after: the provider's hint, seconds)."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Will not work by trying again: recorded as failed with the reason."""


class Provider(Protocol):
    name: str

    async def send(self, message: Outgoing) -> Sent: ...
