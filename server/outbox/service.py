"""Outbox rows: written in the request's transaction, relayed to Celery after commit, and
counted (backlog) for the admins' view and readiness."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.models import utcnow
from server.outbox.models import OutboxEvent

# Topics the worker tier consumes.
ARCHIVE_SUBMISSION = "archive.submission"
REDCAP_SYNC_SUBMISSION = "redcap.sync_submission"
SCORING_SUBMISSION = "scoring.submission"
SCORING_SESSION = "scoring.session"


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


@dataclass(frozen=True)
class Backlog:
    pending: int  # not completed
    unpublished: int  # not completed and never published
    oldest_pending_age_seconds: float | None
    by_topic: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        return {
            "pending": self.pending,
            "oldest_pending_age_seconds": self.oldest_pending_age_seconds,
        }


async def backlog(db: AsyncSession, *, now: datetime, by_topic: bool = True) -> Backlog:
    """Counts and ages only: nothing about what the rows are about."""
    pending = OutboxEvent.completed_at.is_(None)
    row = (
        await db.execute(
            select(
                func.count(),
                func.coalesce(func.sum(case((OutboxEvent.published_at.is_(None), 1), else_=0)), 0),
                func.min(OutboxEvent.created_at),
            ).where(pending)
        )
    ).one()
    count, unpublished, oldest = int(row[0]), int(row[1]), row[2]
    topics_count: dict[str, int] = {}
    if by_topic and count:
        rows = await db.execute(
            select(OutboxEvent.topic, func.count()).where(pending).group_by(OutboxEvent.topic)
        )
        topics_count = {topic: int(n) for topic, n in rows}
    age = round(max((now - oldest).total_seconds(), 0.0), 3) if oldest is not None else None
    return Backlog(count, unpublished, age, topics_count)
