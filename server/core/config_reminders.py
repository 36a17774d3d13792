"""The reminders' settings (server.reminders, server.notifications): providers, their
accounts, and what messages link to. Part of Settings (server.core.config), kept apart so
each file holds one subject."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr


class ReminderSettings(BaseModel):
    # "log" providers write what would be
    # sent (never the address) to the log instead: development needs no mail or SMS account.
    EMAIL_PROVIDER: Literal["smtp", "log"] = "log"
    SMTP_HOST: str = "127.0.0.1"
    SMTP_PORT: int = Field(default=25, ge=1, le=65535)
    SMTP_USERNAME: str = ""
    SMTP_PASSWORD: SecretStr = SecretStr("")
    SMTP_STARTTLS: bool = False
    SMTP_TIMEOUT_SECONDS: float = Field(default=30.0, gt=0)
    EMAIL_FROM: str = "Metricis <no-reply@metricis.invalid>"
    SMS_PROVIDER: Literal["twilio", "log"] = "log"
    TWILIO_ACCOUNT_SID: str = ""
    TWILIO_AUTH_TOKEN: SecretStr = SecretStr("")
    TWILIO_FROM_NUMBER: str = ""
    # Twilio's API base (tests point it at a local stand-in); empty: Twilio's own.
    TWILIO_API_BASE: str = ""
    # The API's public https base (https://api.example.org), as Twilio reaches it. When set,
    # each SMS asks Twilio to report its delivery to /api/reminders/callbacks/twilio here, and
    # the callback's signature is checked over this URL; empty: no delivery reports.
    PUBLIC_BASE_URL: str = ""
    PUSH_PROVIDER: Literal["webpush", "log"] = "log"
    VAPID_PRIVATE_KEY: SecretStr = SecretStr("")
    VAPID_SUBJECT: str = "mailto:no-reply@metricis.invalid"
    # The link messages offer the participant (the app's start page); no token in it.
    PARTICIPANT_APP_URL: str = "http://localhost:5173/"
    # Phone numbers given without a country code are read as this region's (ISO 3166).
    DEFAULT_PHONE_REGION: str = "US"
