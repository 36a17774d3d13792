"""Contact details in and out of their encryption; phone numbers normalised to E.164.

The same SecretBox as REDCap tokens (server.core.crypto): one key setting, one rotation.
Plain values exist only in the request that sets or reads them and in the task that sends a
message; nothing here logs them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import phonenumbers

from server.core.config import Settings
from server.core.crypto import token_box
from server.core.errors import AppError
from server.participants.models import ParticipantContact


class InvalidPhone(AppError):
    status_code = 422
    error_code = "invalid_phone"
    message = "The phone number is not a valid number (give it with its country code, +…)."


@dataclass(frozen=True)
class ContactDetails:
    email: str | None
    phone: str | None
    push: dict[str, Any] | None


def normalise_phone(raw: str, region: str | None) -> str:
    """E.164 ("+4915112345678"); a number without "+" is read as `region`'s."""
    try:
        number = phonenumbers.parse(raw, None if raw.strip().startswith("+") else region)
    except phonenumbers.NumberParseException:
        raise InvalidPhone() from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone()
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _seal(settings: Settings, value: str | None) -> bytes | None:
    return None if value is None else token_box(settings).encrypt(value)


def _open(settings: Settings, value: bytes | None) -> str | None:
    return None if value is None else token_box(settings).decrypt(value)


def read(contact: ParticipantContact, settings: Settings) -> ContactDetails:
    push = _open(settings, contact.push_enc)
    return ContactDetails(
        email=_open(settings, contact.email_enc),
        phone=_open(settings, contact.phone_enc),
        push=None if push is None else json.loads(push),
    )


def write(
    contact: ParticipantContact,
    settings: Settings,
    *,
    email: str | None,
    phone: str | None,
    push: dict[str, Any] | None,
) -> None:
    contact.email_enc = _seal(settings, email)
    contact.phone_enc = _seal(settings, phone)
    contact.push_enc = _seal(settings, None if push is None else json.dumps(push, sort_keys=True))
