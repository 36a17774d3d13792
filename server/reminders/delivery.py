"""What the SMS provider later reports about a message it accepted: delivered, or not.

Twilio posts each status change of a message to the status callback the provider asked for
(server.notifications.sms). Only a report signed with our auth token over our public URL is
read, and only a `sent` message moves on: to delivered, or to failed with Twilio's error code
and reason. Reports come in any order and more than once, so a late `sent` after `delivered`,
a repeat, or a report about an earlier attempt of a message sent again changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from twilio.request_validator import RequestValidator

from server.core.config import Settings
from server.notifications.sms import status_callback_url
from server.reminders.models import MessageStatus, ReminderMessage

PROVIDER = "twilio"
_DELIVERED = frozenset({"delivered"})
_FAILED = frozenset({"undelivered", "failed"})
# Twilio's status callbacks carry ErrorCode, rarely ErrorMessage: the common codes' meaning,
# so a coordinator reads more than a number (https://www.twilio.com/docs/api/errors).
_ERROR_TEXT = {
    "30001": "Queue overflow",
    "30002": "Account suspended",
    "30003": "Unreachable destination handset",
    "30004": "Message blocked",
    "30005": "Unknown destination handset",
    "30006": "Landline or unreachable carrier",
    "30007": "Message filtered by the carrier",
    "30008": "Unknown error",
    "30009": "Missing segment",
    "30010": "Message price exceeds max price",
    "30034": "Message from an unregistered number",
    "21610": "The recipient has unsubscribed (STOP)",
    "21614": "The number is not a mobile number",
}
# Anything that could be a phone number (7 or more digits, with the usual separators): a
# reason never holds the recipient's number, whatever the provider put in its message.
_NUMBER_LIKE = re.compile(r"\+?\d[\d\s().\-]{5,}\d")
_CODE = re.compile(r"^\d{1,6}$")
_MAX_REASON = 300


@dataclass(frozen=True)
class StatusReport:
    """One status callback: the provider's id of the message, its status, and why it failed."""

    sid: str
    status: str
    error_code: str = ""
    error_message: str = ""


def signature_valid(settings: Settings, *, params: Mapping[str, object], signature: str) -> bool:
    """Whether Twilio signed these form params, posted to our public callback URL, with our
    auth token. Without a token or a public URL nothing can be checked, so nothing passes: an
    empty key would let anyone sign."""
    token = settings.TWILIO_AUTH_TOKEN.get_secret_value()
    if not token or not settings.PUBLIC_BASE_URL or not signature:
        return False
    if not all(isinstance(value, str) for value in _values(params)):
        return False  # a file part: never Twilio's
    validator = RequestValidator(token)
    return bool(validator.validate(status_callback_url(settings), params, signature))


def _values(params: Mapping[str, object]) -> list[object]:
    multi = getattr(params, "multi_items", None)
    return [value for _, value in multi()] if callable(multi) else list(params.values())


def failure_reason(error_code: str, error_message: str) -> str:
    """The reason a coordinator reads, e.g. `Twilio 30003: Unreachable destination handset`;
    never with a number in it."""
    code = error_code.strip() if _CODE.match(error_code.strip()) else ""
    text = _NUMBER_LIKE.sub("[number]", error_message.strip()) or _ERROR_TEXT.get(code, "")
    text = text or "The message was not delivered"
    label = f"Twilio {code}" if code else "Twilio"
    return f"{label}: {text}"[:_MAX_REASON]


async def apply_report(db: AsyncSession, report: StatusReport, *, now: datetime) -> str:
    """Apply one status report to its message; returns what happened, for the log:
    unknown (no such message of ours), ignored (not a final status, or the message is past
    `sent`), delivered or failed. Flushes, never commits."""
    if report.status not in _DELIVERED | _FAILED:
        return "ignored"  # queued, sending, sent: nothing a coordinator does not know
    message = await db.scalar(
        select(ReminderMessage)
        .where(
            ReminderMessage.provider == PROVIDER,
            ReminderMessage.provider_message_id == report.sid,
        )
        # Two reports of one message at once are applied one after the other.
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if message is None:
        return "unknown"
    if message.status != MessageStatus.sent:
        # Already delivered or failed, or sent again since (the report is about an earlier
        # attempt): a report never moves a message back or sideways.
        return "ignored"
    if report.status in _DELIVERED:
        message.status = MessageStatus.delivered
        message.error = None
    else:
        message.status = MessageStatus.failed
        message.error = failure_reason(report.error_code, report.error_message)
    message.updated_at = now
    await db.flush()
    return message.status.value
