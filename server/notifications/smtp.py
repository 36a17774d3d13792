"""Email through an SMTP relay (aiosmtplib), each reply classified as worth a retry or not.

A 4xx reply (greylisting, a full queue) is transient and a 5xx one permanent, with the
server's own code and words as the reason; a server that cannot be reached is transient. The
Message-ID derives from the message row, so a copy sent again after a crash between the
relay's 250 and our write is recognisable as the same message by whoever receives both.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from email.message import EmailMessage

import aiosmtplib

from server.core.config import Settings
from server.notifications.base import (
    DeliveryError,
    Outgoing,
    PermanentDeliveryError,
    Sent,
    TransientDeliveryError,
)

_RECIPIENT = "[recipient]"


def message_id_header(message: Outgoing) -> str:
    return f"<{message.message_id}@metricis>"


def build_email(message: Outgoing, *, sender: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = message.to
    mail["Subject"] = message.subject
    mail["Message-ID"] = message_id_header(message)
    mail["Date"] = email.utils.format_datetime(datetime.now(UTC))
    # RFC 3834: an automatic message; auto-responders should not answer it.
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(message.body, subtype="plain", charset="utf-8")
    return mail


def _without_address(text: str, address: str) -> str:
    # Relays often echo the recipient ("550 5.1.1 <jane@x.org>: unknown"): the reason is
    # kept on the message row and shown to staff, the address belongs in the contact only.
    if not address:
        return text
    return re.sub(re.escape(address), _RECIPIENT, text, flags=re.IGNORECASE)


# Refused, reset, timed out, or gone mid-conversation (aiosmtplib's are OSErrors too).
_UNREACHABLE = (
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPConnectError,
    aiosmtplib.SMTPTimeoutError,
    OSError,
)


def _reply_error(code: int, text: str, address: str) -> DeliveryError:
    reason = _without_address(f"{code} {text}".strip(), address)
    if 400 <= code < 500:
        return TransientDeliveryError(reason)
    return PermanentDeliveryError(reason)


def classify(exc: Exception, address: str) -> DeliveryError:
    """The DeliveryError for an aiosmtplib failure; its reason never holds the address."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        # One recipient per message: its refusal is the message's.
        refused = exc.recipients[0]
        return _reply_error(refused.code, refused.message, address)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        # SMTPConnectResponseError (a 421 or 554 greeting) is one of these too.
        return _reply_error(exc.code, exc.message, address)
    if isinstance(exc, _UNREACHABLE):
        # Their messages name host and port: the type is enough for the row.
        return TransientDeliveryError(f"SMTP server unreachable: {type(exc).__name__}")
    if isinstance(exc, aiosmtplib.SMTPException):
        # STARTTLS or SMTPUTF8 not offered, and such: the relay's set-up, not a passing state.
        return PermanentDeliveryError(_without_address(f"SMTP: {exc.message}", address))
    raise exc


class SmtpSession:
    """One connection for many sends (a batch); reconnects after the connection is lost."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._smtp: aiosmtplib.SMTP | None = None

    def _client(self) -> aiosmtplib.SMTP:
        s = self._settings
        password = s.SMTP_PASSWORD.get_secret_value()
        return aiosmtplib.SMTP(
            hostname=s.SMTP_HOST,
            port=s.SMTP_PORT,
            username=s.SMTP_USERNAME or None,
            password=password or None,
            # False, not None: None would upgrade whenever offered, with certificate checks
            # the relay's operator did not ask for.
            start_tls=s.SMTP_STARTTLS,
            timeout=s.SMTP_TIMEOUT_SECONDS,
        )

    async def send(self, message: Outgoing) -> Sent:
        try:
            mail = build_email(message, sender=self._settings.EMAIL_FROM)
            if self._smtp is None or not self._smtp.is_connected:
                self._smtp = self._client()
                await self._smtp.connect()
            await self._smtp.send_message(mail)
        except asyncio.CancelledError:
            # Cut off mid-conversation (a time limit): a QUIT would wait on the same server.
            self._drop()
            raise
        except ValueError as exc:
            # The email package (a line break in a header) or aiosmtplib (an address it
            # cannot put on a command line) refused it before anything was sent.
            raise PermanentDeliveryError("invalid email address or header") from exc
        except Exception as exc:
            if isinstance(exc, _UNREACHABLE):
                self._drop()  # a half-dead connection is not worth a QUIT
            raise classify(exc, message.to) from exc
        return Sent("smtp", message_id_header(message))

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    async def close(self) -> None:
        smtp = self._smtp
        if smtp is None or not smtp.is_connected:
            self._drop()
            return
        with suppress(aiosmtplib.SMTPException, OSError):
            await smtp.quit()
        self._drop()


class SmtpProvider:
    name = "smtp"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @asynccontextmanager
    async def session(self) -> AsyncIterator[SmtpSession]:
        session = SmtpSession(self._settings)
        try:
            yield session
        finally:
            await session.close()

    async def send(self, message: Outgoing) -> Sent:
        async with self.session() as session:
            return await session.send(message)
