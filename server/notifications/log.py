"""A provider that only logs that it would have sent: development, demos, and a channel not
set up yet. What it logs says which message, never to whom or what (no address, number,
subscription or text): the log is not a place for contact details."""

from __future__ import annotations

import structlog

from server.notifications.base import Outgoing, Sent

log = structlog.get_logger(__name__)


class LogProvider:
    name = "log"

    def __init__(self, channel: str) -> None:
        self.channel = channel

    async def send(self, message: Outgoing) -> Sent:
        log.info(
            "notification_logged",
            channel=self.channel,
            message_id=str(message.message_id),
            subject_length=len(message.subject),
        )
        return Sent("log", None)
