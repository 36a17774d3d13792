"""Email through a real SMTP server (SmtpSink on 127.0.0.1): what arrives, how each refusal
is classified, holds and hang-ups; the log-only provider and the choice of provider. No
address or text may reach a reason or the log."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from server.core.config import Settings
from server.notifications.base import (
    PermanentDeliveryError,
    Sent,
    TransientDeliveryError,
)
from server.notifications.log import LogProvider
from server.notifications.registry import provider_for
from server.notifications.smtp import SmtpProvider
from tests.notification_factories import ADDRESS, BODY, outgoing
from tests.smtp_sink import SmtpSink
from workers.errors import is_transient

# Email ------------------------------------------------------------------------------------


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def smtp_settings(settings: Settings, sink: SmtpSink) -> Settings:
    return settings.model_copy(
        update={
            "EMAIL_PROVIDER": "smtp",
            "SMTP_HOST": sink.host,
            "SMTP_PORT": sink.port,
            "SMTP_TIMEOUT_SECONDS": 10.0,
            "EMAIL_FROM": "Metricis study team <reminders@metricis.test>",
        }
    )


async def test_email_arrives_with_deterministic_message_id(
    sink: SmtpSink, smtp_settings: Settings
) -> None:
    message = outgoing("email", ADDRESS, subject="Visit 2 — questionnaires ready")

    sent = await SmtpProvider(smtp_settings).send(message)

    sink.wait_for(1)
    mail = sink.messages[0]
    assert mail["To"] == ADDRESS
    assert mail["From"] == "Metricis study team <reminders@metricis.test>"
    assert mail["Subject"] == "Visit 2 — questionnaires ready"
    assert mail["Message-ID"] == f"<{message.message_id}@metricis>"
    assert mail["Date"]
    assert mail.get_content().strip() == BODY
    assert sent == Sent("smtp", f"<{message.message_id}@metricis>")


async def test_one_session_sends_many(sink: SmtpSink, smtp_settings: Settings) -> None:
    provider = SmtpProvider(smtp_settings)
    messages = [outgoing("email", f"p{i}@example.org") for i in range(3)]

    async with provider.session() as session:
        for message in messages:
            await session.send(message)

    sink.wait_for(3)
    assert [m["To"] for m in sink.messages] == [m.to for m in messages]


async def test_email_4xx_is_transient_without_the_address(
    sink: SmtpSink, smtp_settings: Settings
) -> None:
    provider = SmtpProvider(smtp_settings)
    sink.refuse_next(1, 451)

    with pytest.raises(TransientDeliveryError) as caught:
        await provider.send(outgoing("email", ADDRESS))

    assert "451" in caught.value.reason
    assert "Try again later" in caught.value.reason
    assert ADDRESS not in caught.value.reason
    assert is_transient(caught.value)
    assert sink.messages == []
    # The refusal was one reply: the retry goes through.
    await provider.send(outgoing("email", ADDRESS))
    sink.wait_for(1)


async def test_email_5xx_is_permanent_and_an_echoed_address_is_removed(
    sink: SmtpSink, smtp_settings: Settings
) -> None:
    sink.refuse_next(1, 550, f"5.1.1 <{ADDRESS.upper()}>: No such user")

    with pytest.raises(PermanentDeliveryError) as caught:
        await SmtpProvider(smtp_settings).send(outgoing("email", ADDRESS))

    assert caught.value.reason.startswith("550 5.1.1")
    assert "No such user" in caught.value.reason
    assert ADDRESS not in caught.value.reason.lower()
    assert not is_transient(caught.value)
    assert sink.messages == []


async def test_email_server_down_is_transient(sink: SmtpSink, smtp_settings: Settings) -> None:
    sink.stop()

    with pytest.raises(TransientDeliveryError) as caught:
        await SmtpProvider(smtp_settings).send(outgoing("email", ADDRESS))

    assert caught.value.reason.startswith("SMTP server unreachable: ")
    assert str(sink.port) not in caught.value.reason
    assert "127.0.0.1" not in caught.value.reason


async def test_held_message_is_accepted_only_when_released(
    sink: SmtpSink, smtp_settings: Settings
) -> None:
    sink.hold()
    sending = asyncio.create_task(SmtpProvider(smtp_settings).send(outgoing("email", ADDRESS)))

    await asyncio.to_thread(sink.wait_held, 1)
    assert sink.messages == []
    assert not sending.done()
    sink.release()
    await sending

    sink.wait_for(1)
    assert sink.held_count() == 0


async def test_client_gone_while_held_is_never_accepted(
    sink: SmtpSink, smtp_settings: Settings
) -> None:
    provider = SmtpProvider(smtp_settings)
    sink.hold()
    sending = asyncio.create_task(provider.send(outgoing("email", "gone@example.org")))
    await asyncio.to_thread(sink.wait_held, 1)

    sending.cancel()  # the sender dies mid-DATA: its connection closes
    with pytest.raises(asyncio.CancelledError):
        await sending
    await asyncio.to_thread(sink.wait_held, 0)
    sink.release()
    await provider.send(outgoing("email", "after@example.org"))

    sink.wait_for(1)
    assert [m["To"] for m in sink.messages] == ["after@example.org"]


# The log, and the choice of provider ------------------------------------------------------


async def test_log_provider_logs_which_message_never_to_whom_or_what() -> None:
    message = outgoing("email", ADDRESS)

    with capture_logs() as logs:
        sent = await LogProvider("email").send(message)

    assert sent == Sent("log", None)
    assert logs == [
        {
            "event": "notification_logged",
            "log_level": "info",
            "channel": "email",
            "message_id": str(message.message_id),
            "subject_length": len(message.subject),
        }
    ]
    rendered = repr(logs)
    assert ADDRESS not in rendered
    assert BODY not in rendered


def test_provider_for_follows_the_settings(settings: Settings) -> None:
    logging_only = settings.model_copy(
        update={"EMAIL_PROVIDER": "log", "SMS_PROVIDER": "log", "PUSH_PROVIDER": "log"}
    )
    real = settings.model_copy(
        update={"EMAIL_PROVIDER": "smtp", "SMS_PROVIDER": "twilio", "PUSH_PROVIDER": "webpush"}
    )

    assert [provider_for(c, logging_only).name for c in ("email", "sms", "push")] == ["log"] * 3
    assert [provider_for(c, real).name for c in ("email", "sms", "push")] == [
        "smtp",
        "twilio",
        "webpush",
    ]
    with pytest.raises(ValueError, match="fax"):
        provider_for("fax", settings)
