"""Outbox rows: written in the request's transaction, relayed to Celery after commit."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.models import utcnow
from server.outbox.models import OutboxEvent

# Topics the worker tier consumes.
ARCHIVE_SUBMISSION = "archive.submission"
REDCAP_SYNC_SUBMISSION = "redcap.sync_submission"


@dataclass(frozen=True)
class Event:
    topic: str
    payload: dict[str, Any]
    subject_id: uuid.UUID | None = None


async def add(db: AsyncSession, events: list[Event], *, created_at: datetime | None = None) -> None:
    """Queue events with the caller's transaction: they exist exactly when its data does.

    created_at: a submission's rows take its received_at, so pending rows of a topic in age
    order are its submissions in the order received (the REDCap claim reads them so)."""
    if not events:
        return
    now = created_at or utcnow()
    await db.execute(
        insert(OutboxEvent),
        [
            {
                "id": uuid.uuid4(),
                "topic": e.topic,
                "payload": e.payload,
                "subject_id": e.subject_id,
                "created_at": now,
                "publish_attempts": 0,
            }
            for e in events
        ],
    )
