"""Messages for the notification provider tests: a participant's address, number and text,
which no reason or log line may ever show."""

from __future__ import annotations

import uuid

from server.notifications.base import Outgoing

ADDRESS = "jane.doe.phi@example.org"
NUMBER = "+447700900123"
BODY = "Your visit 2 questionnaires are ready. Go to the app to start."


def outgoing(channel: str, to: str, subject: str = "Visit 2 is open") -> Outgoing:
    return Outgoing(uuid.uuid4(), channel, to, subject, BODY)
