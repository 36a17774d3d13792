"""The outbox's backlog: counts and ages of the rows not yet finished, for the jobs API, the
health check and the relay's log; nothing about what the rows are about."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.outbox.models import OutboxEvent


@dataclass(frozen=True)
class Backlog:
    pending: int  # not finished
    unpublished: int  # not finished and never published
    oldest_pending_age_seconds: float | None
    by_topic: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        return {
            "pending": self.pending,
            "oldest_pending_age_seconds": self.oldest_pending_age_seconds,
        }


async def backlog(db: AsyncSession, *, now: datetime, by_topic: bool = True) -> Backlog:
    """Counts and ages only: nothing about what the rows are about."""
    pending = OutboxEvent.finished_at.is_(None)
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
