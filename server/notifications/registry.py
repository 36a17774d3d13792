"""Which provider sends each channel, as the settings choose (EMAIL_PROVIDER, SMS_PROVIDER,
PUSH_PROVIDER); "log" for any of them logs instead of sending."""

from __future__ import annotations

from server.core.config import Settings
from server.notifications.base import Provider
from server.notifications.log import LogProvider
from server.notifications.push import WebPushProvider
from server.notifications.sms import TwilioSmsProvider
from server.notifications.smtp import SmtpProvider


def provider_for(channel: str, settings: Settings) -> Provider:
    if channel == "email":
        return SmtpProvider(settings) if settings.EMAIL_PROVIDER == "smtp" else LogProvider(channel)
    if channel == "sms":
        return (
            TwilioSmsProvider(settings)
            if settings.SMS_PROVIDER == "twilio"
            else LogProvider(channel)
        )
    if channel == "push":
        return (
            WebPushProvider(settings)
            if settings.PUSH_PROVIDER == "webpush"
            else LogProvider(channel)
        )
    raise ValueError(f"unknown notification channel: {channel!r}")
