"""Outbox rows, each one piece of work for the worker tier: written in the request's
transaction, published by the relay, run by a task, and counted for the admins' view.

A row's life (every step one statement on the row, inside the caller's transaction):

    queued --claim--> running --succeed--> succeeded
                         |---retry-----> retrying (due again after a backoff) --claim--> ...
                         '---fail------> failed (the dead letter; rerun puts it back to queued)

`claim` is called by a run holding the row's run lock (server.outbox.liveness): it takes a row
queued, retrying, or running (then that run is over: its lock was free); a finished row is not
this message's to run. The relay queues a running row again when its run lock is free (its
worker died) and publishes it. Services flush, never commit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.db import one_of
from server.core.logging import scrub
from server.core.models import utcnow
from server.outbox.models import JobStatus, OutboxEvent

# Topics the worker tier consumes.
ARCHIVE_SUBMISSION = "archive.submission"
REDCAP_SYNC_SUBMISSION = "redcap.sync_submission"
SCORING_SUBMISSION = "scoring.submission"
SCORING_SESSION = "scoring.session"
REDCAP_IMPORT_PARTICIPANTS = "redcap.import_participants"
EXPORT_BUILD = "exports.build"
EXPORT_REDCAP_PUSH = "exports.redcap_push"
REMINDERS_SEND = "reminders.send"
MAX_ERROR_CHARS = 2000
RUN_LOST = "Its last run stopped without an outcome (its worker died); sent again."


@dataclass(frozen=True)
class Event:
    topic: str
    payload: dict[str, Any]
    subject_id: uuid.UUID | None = None
    study_id: uuid.UUID | None = None
    # A row the caller names (a message records its job) and one not to run before due_at.
    id: uuid.UUID | None = None
    due_at: datetime | None = None


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
                "id": e.id or uuid.uuid4(),
                "topic": e.topic,
                "payload": e.payload,
                "subject_id": e.subject_id,
                "study_id": e.study_id,
                "created_at": now,
                "due_at": e.due_at or now,
            }
            for e in events
        ],
    )


def safe_error(exc: BaseException) -> str:
    """What a row and the logs keep of an error: its type and scrubbed text (exception text
    is meant to carry ids, not PHI; emails, phones and tokens that slip in are masked)."""
    message = str(exc).strip()
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    scrubbed: str = scrub(text)
    return scrubbed[:MAX_ERROR_CHARS]


# --- the relay's part ----------------------------------------------------------------------


async def due(db: AsyncSession, *, now: datetime, limit: int) -> list[tuple[uuid.UUID, str]]:
    """(id, topic) of up to `limit` unfinished rows past their due_at, most overdue first,
    locked (SKIP LOCKED: two relays never take the same rows) until the caller commits. Not
    running rows: whether their run is alive is its lock's to say (liveness.orphaned)."""
    rows = await db.execute(
        select(OutboxEvent.id, OutboxEvent.topic)
        .where(
            OutboxEvent.finished_at.is_(None),
            OutboxEvent.due_at <= now,
            OutboxEvent.status != JobStatus.running,
        )
        .order_by(OutboxEvent.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [(row[0], row[1]) for row in rows]


async def published(
    db: AsyncSession, ids: list[uuid.UUID], *, now: datetime, lease: timedelta
) -> None:
    """Sent: due again one lease from now if no run has claimed it by then (the message was
    lost with Redis, say). A row still running is one whose run lock was free: that run is over
    (its worker died, or its time limit ended it), and the row is queued again for the message
    just sent."""
    if ids:
        running = OutboxEvent.status == JobStatus.running
        await db.execute(
            update(OutboxEvent)
            .where(OutboxEvent.id.in_(ids))
            .values(
                published_at=now,
                due_at=now + lease,
                status=case((running, JobStatus.queued), else_=OutboxEvent.status),
                error=case((running, RUN_LOST), else_=OutboxEvent.error),
            )
            .execution_options(synchronize_session=False)
        )


# --- the task protocol's part (workers.protocol) -------------------------------------------


@dataclass(frozen=True)
class Claimed:
    topic: str
    payload: dict[str, Any]
    attempts: int  # this run included


async def claim(
    db: AsyncSession, event_id: uuid.UUID, *, now: datetime, max_attempts: int
) -> Claimed | str:
    """The row running for this message, attempts + 1; or why not (str). The caller holds the
    row's run lock, so a row found running is a run that died (its lock was free)."""
    row = await db.scalar(
        select(OutboxEvent)
        .where(OutboxEvent.id == event_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if row is None:
        return "gone"
    if row.finished_at is not None:
        return str(row.status)
    if row.attempts >= max_attempts:
        # Every run so far ended without reporting back (its worker died, or its time limit
        # killed it): work that kills workers is not tried for ever.
        _finish(row, JobStatus.failed, now, f"out of attempts after {row.attempts} runs")
        await db.flush()
        return "out of attempts"
    row.status = JobStatus.running
    row.attempts += 1
    row.started_at = now
    await db.flush()
    return Claimed(row.topic, dict(row.payload), row.attempts)


def _finish(row: OutboxEvent, status: JobStatus, now: datetime, error: str | None) -> None:
    row.status = status
    row.finished_at = now
    row.error = error
    if status == JobStatus.succeeded:
        row.progress = 100


async def succeed(
    db: AsyncSession, event_id: uuid.UUID, *, now: datetime, result_location: str | None = None
) -> None:
    row = await db.get(OutboxEvent, event_id, with_for_update=True, populate_existing=True)
    if row is not None and row.finished_at is None:
        _finish(row, JobStatus.succeeded, now, None)
        row.result_location = result_location
        await db.flush()


async def retry(db: AsyncSession, event_id: uuid.UUID, *, error: str, due_at: datetime) -> None:
    """A transient error: the relay publishes it again at due_at."""
    await db.execute(
        update(OutboxEvent)
        .where(OutboxEvent.id == event_id, OutboxEvent.finished_at.is_(None))
        .values(status=JobStatus.retrying, error=error, due_at=due_at)
        .execution_options(synchronize_session=False)
    )


async def resume(db: AsyncSession, event_id: uuid.UUID, *, due_at: datetime) -> None:
    """A long job that stopped on purpose with work left, after progress (a REDCap push, in
    runs of a time budget): due again, its attempt given back, since it did not fail."""
    await db.execute(
        update(OutboxEvent)
        .where(OutboxEvent.id == event_id, OutboxEvent.finished_at.is_(None))
        .values(
            status=JobStatus.retrying,
            error=None,
            due_at=due_at,
            attempts=func.greatest(OutboxEvent.attempts - 1, 0),
        )
        .execution_options(synchronize_session=False)
    )


async def fail(db: AsyncSession, event_id: uuid.UUID, *, error: str, now: datetime) -> None:
    """Failed for good: the row is the dead letter, visible to admins, re-runnable."""
    row = await db.get(OutboxEvent, event_id, with_for_update=True, populate_existing=True)
    if row is not None and row.finished_at is None:
        _finish(row, JobStatus.failed, now, error)
        await db.flush()


async def rerun(db: AsyncSession, row: OutboxEvent, *, now: datetime) -> None:
    """A failed row queued again with a fresh budget of attempts; the relay publishes it."""
    row.status = JobStatus.queued
    row.attempts = 0
    row.progress = 0
    row.error = None
    row.result_location = None
    row.started_at = None
    row.finished_at = None
    row.due_at = now
    row.rerun_at = now
    await db.flush()


async def settle(
    db: AsyncSession,
    topic: str,
    subject_ids: list[uuid.UUID],
    *,
    now: datetime,
    error: str | None = None,
) -> None:
    """Rows of `topic` about these subjects, settled by another row's run (a REDCap batch sends
    other submissions too): succeeded, or failed with `error`, so their own runs find nothing
    to do. Rows locked right now (a run starting on one) are left to that run."""
    if not subject_ids:
        return
    free = (
        select(OutboxEvent.id)
        .where(
            OutboxEvent.topic == topic,
            # One array parameter: a 500-id IN list was a new statement to prepare each batch.
            one_of(OutboxEvent.subject_id, subject_ids),
            OutboxEvent.finished_at.is_(None),
        )
        .with_for_update(skip_locked=True)
    )
    status = JobStatus.succeeded if error is None else JobStatus.failed
    await db.execute(
        update(OutboxEvent)
        .where(OutboxEvent.id.in_(free.scalar_subquery()))
        .values(
            status=status,
            finished_at=now,
            progress=100 if error is None else OutboxEvent.progress,
            error=error,
        )
        .execution_options(synchronize_session=False)
    )
