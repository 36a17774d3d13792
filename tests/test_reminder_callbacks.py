"""Twilio's delivery reports, as Twilio posts them (form-encoded, signed with the auth token
over the public URL): a sent SMS becomes delivered, or failed with Twilio's reason, as the
coordinator sees it; an unsigned report changes nothing; the number never reaches a log."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response
from pydantic import SecretStr, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from twilio.request_validator import RequestValidator

from server.core.config import Settings
from server.core.logging import build_handler
from server.main import create_app
from server.reminders.models import Channel, MessageStatus, ReminderMessage
from tests import reminder_factories as rf
from tests.conftest import make_settings, use_test_session
from tests.reminder_factories import World

TOKEN = "a-test-auth-token"
PUBLIC = "https://api.metricis.example"
URL = PUBLIC + "/api/reminders/callbacks/twilio"
PATH = "/api/reminders/callbacks/twilio"
TO = "+447700900123"  # the participant of site B's number
SID = "SM" + "1" * 32


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(
        settings.model_copy(
            update={
                "SMS_PROVIDER": "twilio",
                "TWILIO_AUTH_TOKEN": SecretStr(TOKEN),
                "PUBLIC_BASE_URL": PUBLIC,
            }
        )
    )
    yield app
    await app.state.engine.dispose()
    await app.state.redis.aclose()


@pytest.fixture
async def client(app: FastAPI, db: AsyncSession) -> AsyncIterator[AsyncClient]:
    use_test_session(app, db)
    transport = ASGITransport(app=app, client=("10.1.2.3", 40000))
    async with AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
def log_output(app: FastAPI, settings: Settings) -> Iterator[io.StringIO]:
    """Everything logged once the app is built, rendered as production renders it (JSON)."""
    stream = io.StringIO()
    handler = build_handler(settings.model_copy(update={"LOG_JSON": True}), stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


@pytest.fixture
async def world(db: AsyncSession, settings: Settings) -> World:
    return await rf.create_world(db, settings)


async def _sms(
    db: AsyncSession, world: World, *, status: MessageStatus, sid: str
) -> ReminderMessage:
    """An SMS to the participant of site B, as the sending left it with Twilio's sid."""
    occurrence = await rf.create_occurrence(db, world.participants["B"], world.schedule)
    message = await rf.create_message(
        db, occurrence, world.rule, channel=Channel.sms, status=status, provider="twilio"
    )
    message.provider_message_id = sid
    await db.flush()
    return message


def _form(sid: str, status: str, **extra: str) -> dict[str, str]:
    """The fields Twilio posts to a status callback."""
    return {
        "AccountSid": "AC" + "0" * 32,
        "ApiVersion": "2010-04-01",
        "From": "+15005550006",
        "To": TO,
        "MessageSid": sid,
        "SmsSid": sid,
        "SmsStatus": status,
        "MessageStatus": status,
        **extra,
    }


async def _post(
    client: AsyncClient, form: dict[str, str], *, signature: str | None = None
) -> Response:
    if signature is None:
        signature = RequestValidator(TOKEN).compute_signature(URL, form)
    return await client.post(PATH, data=form, headers={"X-Twilio-Signature": signature})


async def _seen(client: AsyncClient, world: World, message: ReminderMessage) -> dict[str, Any]:
    """The message as the coordinator sees it in the list."""
    response = await client.get(
        "/api/reminders/messages",
        params={"study_id": str(world.study.id)},
        headers=world.headers["coordinator"],
    )
    assert response.status_code == 200, response.text
    [seen] = [m for m in response.json() if m["id"] == str(message.id)]
    assert isinstance(seen, dict)
    return seen


async def test_a_delivered_report_shows_the_message_delivered(
    client: AsyncClient, db: AsyncSession, world: World
) -> None:
    message = await _sms(db, world, status=MessageStatus.sent, sid=SID)

    response = await _post(client, _form(SID, "delivered"))

    assert response.status_code == 200, response.text
    seen = await _seen(client, world, message)
    assert (seen["status"], seen["error"]) == ("delivered", None)


async def test_an_undelivered_report_fails_the_message_with_twilios_reason(
    client: AsyncClient, db: AsyncSession, world: World
) -> None:
    message = await _sms(db, world, status=MessageStatus.sent, sid=SID)

    response = await _post(client, _form(SID, "undelivered", ErrorCode="30003"))

    assert response.status_code == 200, response.text
    seen = await _seen(client, world, message)
    assert (seen["status"], seen["error"]) == (
        "failed",
        "Twilio 30003: Unreachable destination handset",
    )


async def test_the_reason_never_holds_a_number_twilio_quoted(
    client: AsyncClient, db: AsyncSession, world: World
) -> None:
    message = await _sms(db, world, status=MessageStatus.sent, sid=SID)
    quoted = f"The destination {TO} (07700 900123) is unreachable"

    await _post(client, _form(SID, "failed", ErrorCode="30003", ErrorMessage=quoted))

    seen = await _seen(client, world, message)
    assert seen["status"] == "failed"
    assert seen["error"].startswith("Twilio 30003: The destination ")
    assert "7700" not in seen["error"] and "900123" not in seen["error"]


@pytest.mark.parametrize("signed_by", ["nobody", "garbage", "another token"])
async def test_a_report_without_a_valid_signature_is_refused_and_changes_nothing(
    client: AsyncClient, db: AsyncSession, world: World, signed_by: str
) -> None:
    message = await _sms(db, world, status=MessageStatus.sent, sid=SID)
    form = _form(SID, "delivered")
    headers = {
        "nobody": {},
        "garbage": {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"},
        "another token": {
            "X-Twilio-Signature": RequestValidator("another-token").compute_signature(URL, form)
        },
    }[signed_by]

    response = await client.post(PATH, data=form, headers=headers)

    assert response.status_code == 403, response.text
    body = response.json()
    assert set(body) == {"error_code", "message", "correlation_id", "details"}
    assert body["error_code"] == "invalid_signature"
    assert (await _seen(client, world, message))["status"] == "sent"


async def test_a_signature_over_other_params_is_refused(
    client: AsyncClient, db: AsyncSession, world: World
) -> None:
    message = await _sms(db, world, status=MessageStatus.sent, sid=SID)
    signed_for_sent = RequestValidator(TOKEN).compute_signature(URL, _form(SID, "sent"))

    response = await _post(client, _form(SID, "failed"), signature=signed_for_sent)

    assert response.status_code == 403, response.text
    assert (await _seen(client, world, message))["status"] == "sent"


async def test_a_report_of_an_unknown_message_is_answered_200_and_changes_nothing(
    client: AsyncClient, db: AsyncSession, world: World
) -> None:
    message = await _sms(db, world, status=MessageStatus.sent, sid=SID)

    response = await _post(client, _form("SM" + "9" * 32, "delivered"))

    assert response.status_code == 200, response.text
    assert (await _seen(client, world, message))["status"] == "sent"


async def test_a_late_sent_after_delivered_keeps_the_message_delivered(
    client: AsyncClient, db: AsyncSession, world: World
) -> None:
    message = await _sms(db, world, status=MessageStatus.sent, sid=SID)

    for status in ("delivered", "sent", "undelivered"):
        response = await _post(client, _form(SID, status, ErrorCode="30003"))
        assert response.status_code == 200, response.text

    seen = await _seen(client, world, message)
    assert (seen["status"], seen["error"]) == ("delivered", None)


async def test_a_report_never_moves_a_message_that_is_not_sent(
    client: AsyncClient, db: AsyncSession, world: World
) -> None:
    # Sent again by a coordinator after it failed: the old attempt's report is not about it.
    queued = await _sms(db, world, status=MessageStatus.queued, sid=SID)

    await _post(client, _form(SID, "delivered"))

    assert (await _seen(client, world, queued))["status"] == "queued"


async def test_the_log_holds_the_sid_and_status_and_never_the_number(
    client: AsyncClient, db: AsyncSession, world: World, log_output: io.StringIO
) -> None:
    await _sms(db, world, status=MessageStatus.sent, sid=SID)

    await _post(client, _form(SID, "undelivered", ErrorCode="30003"))
    await _post(client, _form(SID, "delivered"), signature="forged")

    logged = log_output.getvalue()
    assert SID in logged and "undelivered" in logged
    assert TO not in logged and TO.lstrip("+") not in logged and "7700900123" not in logged


def test_production_takes_only_an_https_public_url(settings: Settings) -> None:
    production = {
        "ENVIRONMENT": "production",
        "JWT_SECRET_KEY": "production-check-" + "k" * 40,
        "REDCAP_TOKEN_KEY": Fernet.generate_key().decode(),
    }
    with pytest.raises(ValidationError, match="PUBLIC_BASE_URL must be an https URL"):
        make_settings(settings.DATABASE_URL, PUBLIC_BASE_URL="http://api.example.org", **production)

    https = make_settings(settings.DATABASE_URL, PUBLIC_BASE_URL=PUBLIC, **production)
    assert https.PUBLIC_BASE_URL == PUBLIC
