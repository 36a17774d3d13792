"""The notification providers against real servers on 127.0.0.1: an SMTP server (SmtpSink),
a Twilio stand-in and a Web Push endpoint; how each failure is classified, and that no
address, number or text reaches a reason or the log."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from py_vapid import Vapid
from pydantic import SecretStr
from structlog.testing import capture_logs

from server.core.config import Settings
from server.notifications.base import (
    Outgoing,
    PermanentDeliveryError,
    Sent,
    TransientDeliveryError,
)
from server.notifications.log import LogProvider
from server.notifications.push import WebPushProvider, load_vapid_key
from server.notifications.registry import provider_for
from server.notifications.sms import TwilioSmsProvider
from server.notifications.smtp import SmtpProvider
from tests.smtp_sink import SmtpSink
from tests.twilio_standin import INVALID_TO, TOO_MANY, TwilioStandin, twilio_standin
from workers.errors import is_transient, retry_after

ADDRESS = "jane.doe.phi@example.org"
NUMBER = "+447700900123"
BODY = "Your visit 2 questionnaires are ready. Go to the app to start."


def outgoing(channel: str, to: str, subject: str = "Visit 2 is open") -> Outgoing:
    return Outgoing(uuid.uuid4(), channel, to, subject, BODY)


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


# SMS --------------------------------------------------------------------------------------


@pytest.fixture
def standin() -> Iterator[TwilioStandin]:
    with twilio_standin() as standin:
        yield standin


@pytest.fixture
def sms_settings(settings: Settings, standin: TwilioStandin) -> Settings:
    return settings.model_copy(
        update={
            "SMS_PROVIDER": "twilio",
            "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
            "TWILIO_AUTH_TOKEN": SecretStr("a-test-auth-token"),
            "TWILIO_FROM_NUMBER": "+15005550006",
            "TWILIO_API_BASE": standin.base_url,
        }
    )


async def test_sms_is_sent_through_twilio(standin: TwilioStandin, sms_settings: Settings) -> None:
    sent = await TwilioSmsProvider(sms_settings).send(outgoing("sms", NUMBER))

    assert sent.provider == "twilio"
    assert sent.provider_message_id is not None
    assert sent.provider_message_id.startswith("SM")
    [request] = standin.received
    assert request.account_sid == "AC" + "0" * 32
    assert request.form == {"To": NUMBER, "From": "+15005550006", "Body": BODY}
    expected = base64.b64encode(b"AC" + b"0" * 32 + b":a-test-auth-token").decode()
    assert request.authorization == f"Basic {expected}"


async def test_sms_invalid_number_is_permanent(
    standin: TwilioStandin, sms_settings: Settings
) -> None:
    standin.fail_next(400, INVALID_TO)

    with pytest.raises(PermanentDeliveryError) as caught:
        await TwilioSmsProvider(sms_settings).send(outgoing("sms", NUMBER))

    assert caught.value.reason == "21211 Invalid 'To' Phone Number"


async def test_sms_reason_never_holds_the_number(
    standin: TwilioStandin, sms_settings: Settings
) -> None:
    message = f"The 'To' number {NUMBER} is not a valid phone number."
    standin.fail_next(400, {"code": 21211, "message": message, "status": 400})

    with pytest.raises(PermanentDeliveryError) as caught:
        await TwilioSmsProvider(sms_settings).send(outgoing("sms", NUMBER))

    assert caught.value.reason.startswith("21211 The 'To' number ")
    assert NUMBER.lstrip("+") not in caught.value.reason


async def test_sms_rate_limited_is_transient_with_retry_after(
    standin: TwilioStandin, sms_settings: Settings
) -> None:
    standin.fail_next(429, TOO_MANY, {"Retry-After": "7"})

    with pytest.raises(TransientDeliveryError) as caught:
        await TwilioSmsProvider(sms_settings).send(outgoing("sms", NUMBER))

    assert "429" in caught.value.reason
    assert caught.value.retry_after == 7.0
    assert retry_after(caught.value) == 7.0


async def test_sms_server_error_and_no_server_are_transient(
    standin: TwilioStandin, sms_settings: Settings
) -> None:
    provider = TwilioSmsProvider(sms_settings)
    standin.fail_next(503, {"code": 20503, "message": "Service Unavailable", "status": 503})
    with pytest.raises(TransientDeliveryError, match="503"):
        await provider.send(outgoing("sms", NUMBER))

    standin.shutdown()
    standin.server_close()
    with pytest.raises(TransientDeliveryError) as caught:
        await provider.send(outgoing("sms", NUMBER))
    assert caught.value.reason.startswith("Twilio unreachable: ")


# Web Push ---------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class PushEndpoint(ThreadingHTTPServer):
    """A push service: answers `status` to each POST and keeps its headers and body."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _PushHandler)
        self.status = 201
        self.received: list[tuple[dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/push/abc123"


class _PushHandler(BaseHTTPRequestHandler):
    server: PushEndpoint

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def push_endpoint() -> Iterator[PushEndpoint]:
    server = PushEndpoint()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def endpoint() -> Iterator[PushEndpoint]:
    with push_endpoint() as endpoint:
        yield endpoint


@pytest.fixture
def browser_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def auth_secret() -> bytes:
    return os.urandom(16)


@pytest.fixture
def push_settings(settings: Settings) -> Settings:
    vapid = Vapid()
    vapid.generate_keys()
    raw = vapid.private_key.private_numbers().private_value.to_bytes(32, "big")
    return settings.model_copy(
        update={
            "PUSH_PROVIDER": "webpush",
            "VAPID_PRIVATE_KEY": SecretStr(_b64url(raw)),
            "VAPID_SUBJECT": "mailto:team@metricis.test",
        }
    )


def push_public_key(settings: Settings) -> str:
    key = load_vapid_key(settings.VAPID_PRIVATE_KEY.get_secret_value()).public_key
    return _b64url(key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))


def subscription(
    endpoint: PushEndpoint, browser_key: ec.EllipticCurvePrivateKey, auth_secret: bytes
) -> str:
    public = browser_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return json.dumps(
        {
            "endpoint": endpoint.url,
            "keys": {"p256dh": _b64url(public), "auth": _b64url(auth_secret)},
        }
    )


async def test_push_is_delivered_encrypted_and_signed(
    endpoint: PushEndpoint,
    push_settings: Settings,
    browser_key: ec.EllipticCurvePrivateKey,
    auth_secret: bytes,
) -> None:
    to = subscription(endpoint, browser_key, auth_secret)

    sent = await WebPushProvider(push_settings).send(outgoing("push", to, subject="Visit 2"))

    assert sent == Sent("webpush", None)
    [(headers, body)] = endpoint.received
    assert headers["content-encoding"] == "aes128gcm"
    # Signed with our VAPID key, for this push service, naming our contact.
    scheme, _, params = headers["authorization"].partition(" ")
    fields = dict(part.split("=", 1) for part in params.split(","))
    assert scheme == "vapid"
    assert fields["k"] == push_public_key(push_settings)
    claims = json.loads(base64.urlsafe_b64decode(fields["t"].split(".")[1] + "=="))
    assert claims["sub"] == "mailto:team@metricis.test"
    assert claims["aud"] == endpoint.url.split("/push/")[0]
    # Only the browser's key opens it, and it holds what the service worker shows.
    plain = http_ece.decrypt(
        body, private_key=browser_key, auth_secret=auth_secret, version="aes128gcm"
    )
    assert json.loads(plain) == {"title": "Visit 2", "body": BODY}


async def test_push_to_an_expired_subscription_is_permanent(
    endpoint: PushEndpoint,
    push_settings: Settings,
    browser_key: ec.EllipticCurvePrivateKey,
    auth_secret: bytes,
) -> None:
    endpoint.status = 410

    with pytest.raises(PermanentDeliveryError) as caught:
        await WebPushProvider(push_settings).send(
            outgoing("push", subscription(endpoint, browser_key, auth_secret))
        )

    assert "subscription expired" in caught.value.reason
    assert endpoint.url not in caught.value.reason


@pytest.mark.parametrize("status", [429, 503])
async def test_push_busy_service_is_transient(
    endpoint: PushEndpoint,
    push_settings: Settings,
    browser_key: ec.EllipticCurvePrivateKey,
    auth_secret: bytes,
    status: int,
) -> None:
    endpoint.status = status

    with pytest.raises(TransientDeliveryError, match=str(status)):
        await WebPushProvider(push_settings).send(
            outgoing("push", subscription(endpoint, browser_key, auth_secret))
        )


async def test_push_to_a_malformed_subscription_is_permanent(push_settings: Settings) -> None:
    with pytest.raises(PermanentDeliveryError, match="invalid push subscription"):
        await WebPushProvider(push_settings).send(outgoing("push", '{"endpoint": 1}'))


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


def test_vapid_key_is_read_as_pem_or_base64url() -> None:
    vapid = Vapid()
    vapid.generate_keys()
    raw = vapid.private_key.private_numbers().private_value.to_bytes(32, "big")
    expected = vapid.public_key.public_numbers()

    for text in (vapid.private_pem().decode(), _b64url(raw)):
        assert load_vapid_key(text).public_key.public_numbers() == expected
