"""Jobs as users and admins see them: the outbox rows (server.outbox), read and re-run.

A failed row is the dead letter: admins list them and re-run one (queued again, a fresh
budget of attempts); the relay publishes it. Services flush, never commit.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.errors import Conflict, NotFound
from server.jobs import scope
from server.outbox import service as outbox
from server.outbox.models import JobStatus, OutboxEvent


def _jobs_query(
    *,
    member_of: uuid.UUID | None,
    study_id: uuid.UUID | None,
    status: JobStatus | None,
    kind: str | None,
) -> Select[OutboxEvent]:
    query = select(OutboxEvent)
    if member_of is not None:
        # Non-admins: jobs of their studies (of their sites, where limited to some).
        query = query.where(scope.visible_to(member_of))
    if study_id is not None:
        query = query.where(OutboxEvent.study_id == study_id)
    if status is not None:
        query = query.where(OutboxEvent.status == status)
    if kind is not None:
        query = query.where(OutboxEvent.topic == kind)
    return query


async def list_jobs(
    db: AsyncSession,
    *,
    member_of: uuid.UUID | None,
    study_id: uuid.UUID | None = None,
    status: JobStatus | None = None,
    kind: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[OutboxEvent]:
    """Newest first. member_of: a non-admin's user id (only their studies); None for admins."""
    query = _jobs_query(member_of=member_of, study_id=study_id, status=status, kind=kind)
    rows = await db.scalars(
        query.order_by(OutboxEvent.created_at.desc(), OutboxEvent.id).limit(limit).offset(offset)
    )
    return list(rows)


async def list_dead_letters(
    db: AsyncSession, *, rerun: bool | None = None, limit: int = 50, offset: int = 0
) -> list[OutboxEvent]:
    """Failed rows, newest first; rerun=true: only those failed again after a re-run."""
    query = select(OutboxEvent).where(OutboxEvent.status == JobStatus.failed)
    if rerun is True:
        query = query.where(OutboxEvent.rerun_at.is_not(None))
    elif rerun is False:
        query = query.where(OutboxEvent.rerun_at.is_(None))
    rows = await db.scalars(
        query.order_by(OutboxEvent.finished_at.desc(), OutboxEvent.id).limit(limit).offset(offset)
    )
    return list(rows)


async def rerun(db: AsyncSession, *, job_id: uuid.UUID, now: datetime) -> OutboxEvent:
    """A failed job queued again; the relay publishes it."""
    row = await db.get(OutboxEvent, job_id, with_for_update=True)
    if row is None:
        raise NotFound("No such dead letter.")
    if row.status != JobStatus.failed:
        raise Conflict(f"This job is {row.status}, not failed.", error_code="not_failed")
    await outbox.rerun(db, row, now=now)
    return row
