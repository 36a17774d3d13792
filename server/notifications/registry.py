"""Which provider sends each channel, as the settings choose (EMAIL_PROVIDER, SMS_PROVIDER,
PUSH_PROVIDER); "log" for any of them logs instead of sending.

Each provider's module is imported when it is first chosen: Twilio's client and pywebpush
(with aiohttp and their crypto) weigh ~30 MB of every worker process's memory, and most
processes (exports, reports, REDCap) never send a message, nor does a deployment that sends
no SMS or push.
"""

from __future__ import annotations

from server.core.config import Settings
from server.notifications.base import Provider
from server.notifications.log import LogProvider


def provider_for(channel: str, settings: Settings) -> Provider:
    if channel == "email":
        from server.notifications.smtp import SmtpProvider

        return SmtpProvider(settings) if settings.EMAIL_PROVIDER == "smtp" else LogProvider(channel)
    if channel == "sms":
        from server.notifications.sms import TwilioSmsProvider

        return (
            TwilioSmsProvider(settings)
            if settings.SMS_PROVIDER == "twilio"
            else LogProvider(channel)
        )
    if channel == "push":
        from server.notifications.push import WebPushProvider

        return (
            WebPushProvider(settings)
            if settings.PUSH_PROVIDER == "webpush"
            else LogProvider(channel)
        )
    raise ValueError(f"unknown notification channel: {channel!r}")
