"""SMS through Twilio's client against a stand-in of its Messages API: what is sent, and
which refusals are permanent or worth a retry; the number never reaches a reason."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from server.core.config import Settings
from server.notifications.base import (
    PermanentDeliveryError,
    TransientDeliveryError,
)
from server.notifications.sms import TwilioSmsProvider
from tests.notification_factories import BODY, NUMBER, outgoing
from tests.twilio_standin import INVALID_TO, TOO_MANY, TwilioStandin, twilio_standin
from workers.errors import retry_after


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


async def test_sms_asks_twilio_to_report_delivery_when_the_api_has_a_public_url(
    standin: TwilioStandin, sms_settings: Settings
) -> None:
    with_url = sms_settings.model_copy(update={"PUBLIC_BASE_URL": "https://api.example.org/"})

    await TwilioSmsProvider(with_url).send(outgoing("sms", NUMBER))
    await TwilioSmsProvider(sms_settings).send(outgoing("sms", NUMBER))

    reported, unreported = standin.received
    assert (
        reported.form["StatusCallback"] == "https://api.example.org/api/reminders/callbacks/twilio"
    )
    assert "StatusCallback" not in unreported.form
