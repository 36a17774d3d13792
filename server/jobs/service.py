"""Jobs and dead letters: the worker tier's record of each outbox event, as admins see it.

The task protocol (workers.events) moves a job through queued -> running -> succeeded, or
-> retrying -> ... -> failed with a dead letter. Every step locks the event's outbox row, so a
duplicate message (a re-publish after the lease, a redelivery) never records twice.
Services flush, never commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Select, Uuid, case, cast, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.db import one_of
from server.core.errors import Conflict, NotFound
from server.core.logging import scrub
from server.jobs import scope
from server.jobs.models import DeadLetter, Job, JobStatus
from server.outbox.models import OutboxEvent
from server.submissions.models import Submission

MAX_ERROR_CHARS = 2000


def safe_error(exc: BaseException) -> str:
    """What a job, a dead letter and the logs keep of an error: its type and scrubbed text.

    Exception text is meant to carry ids, not PHI; emails, phone numbers and bearer tokens
    that slip in anyway are masked by the same scrubber the logs use.
    """
    message = str(exc).strip()
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    scrubbed: str = scrub(text)
    return scrubbed[:MAX_ERROR_CHARS]


async def _lock_event(db: AsyncSession, event_id: uuid.UUID) -> OutboxEvent | None:
    """The event row, locked until the transaction ends."""
    query = select(OutboxEvent).where(OutboxEvent.id == event_id).with_for_update()
    return (await db.execute(query.execution_options(populate_existing=True))).scalar_one_or_none()


class EventRow(Protocol):
    """What ensure_jobs reads of an outbox event: the ORM row, or the relay's plain copy."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> dict[str, Any]: ...
    @property
    def subject_id(self) -> uuid.UUID | None: ...
    @property
    def created_at(self) -> datetime: ...


_UUID_TEXT = r"^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$"


def _make_jobs(event_ids: list[uuid.UUID]) -> Any:
    """The events' Jobs made from their rows in the database, nothing but the ids crossing
    from Python (building and binding each Job's ten values was about half of the relay's CPU
    in a backlog). The Job's study is its submission's, named by the payload; a payload that
    names none (or not as a UUID) makes a Job of no study."""
    named = OutboxEvent.payload["submission_id"].astext
    due = (
        select(
            OutboxEvent.id,
            OutboxEvent.topic,
            OutboxEvent.payload,
            OutboxEvent.subject_id,
            OutboxEvent.created_at,
            case((named.regexp_match(_UUID_TEXT, flags="i"), cast(named, Uuid)), else_=None).label(
                "submission_id"
            ),
        )
        .where(one_of(OutboxEvent.id, event_ids))
        .cte("due")
    )
    rows = select(
        func.gen_random_uuid(),
        due.c.topic,
        literal(JobStatus.queued.value),
        Submission.study_id,
        func.coalesce(due.c.subject_id, due.c.submission_id),
        due.c.id,
        due.c.payload,
        literal(0),
        literal(0),
        due.c.created_at,
    ).select_from(due.outerjoin(Submission, Submission.id == due.c.submission_id))
    columns = ["id", "kind", "status", "study_id", "subject_id", "outbox_event_id", "params",
               "progress", "attempts", "created_at"]  # fmt: skip
    return (
        pg_insert(Job)
        .from_select(columns, rows)
        .on_conflict_do_nothing(index_elements=["outbox_event_id"])
        .returning(Job.id)
    )


async def ensure_jobs(db: AsyncSession, events: Sequence[EventRow]) -> int:
    """Create the missing Job of each event (kind = topic, queued); returns how many it made.

    The study comes from the submission when the payload names one. Safe to race with a task
    creating the same job: the insert skips an event that already has one.
    """
    # No look for the jobs that exist first: the insert skips them, and says which it made.
    # (That look cost more than the insert: on a jobs table grown since its last ANALYZE,
    # PostgreSQL read all of it for every relay batch.)
    missing = list(events)
    if not missing:
        return 0
    made = await db.execute(_make_jobs([e.id for e in missing]))
    return len(made.all())


async def _job_of(db: AsyncSession, event: OutboxEvent) -> Job:
    job = await db.scalar(
        select(Job).where(Job.outbox_event_id == event.id).execution_options(populate_existing=True)
    )
    if job is None:
        await ensure_jobs(db, [event])
        job = await db.scalar(select(Job).where(Job.outbox_event_id == event.id))
    assert job is not None
    return job


# --- the task protocol -------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """A task may run: the job is marked running and the event's lease covers the run."""

    job_id: uuid.UUID
    topic: str
    payload: dict[str, Any]
    attempts: int


@dataclass(frozen=True)
class Skipped:
    """Nothing to run: the event is gone, already completed, or out of attempts."""

    reason: str


def _hold(event: OutboxEvent, until: datetime) -> None:
    # Only ever extended: the relay must not re-publish while a task is running or waiting to
    # retry, and a shorter hold from a duplicate must not shorten a longer one.
    if event.lease_until is None or event.lease_until < until:
        event.lease_until = until


async def start(
    db: AsyncSession,
    *,
    event_id: uuid.UUID,
    task_name: str,
    celery_task_id: str | None,
    now: datetime,
    hold_until: datetime,
    max_attempts: int,
) -> Started | Skipped:
    event = await _lock_event(db, event_id)
    if event is None:
        return Skipped("gone")
    if event.completed_at is not None:
        return Skipped("completed")
    job = await _job_of(db, event)
    if job.attempts >= max_attempts:
        # Every earlier attempt ended without reporting back (its worker died, or the hard
        # time limit killed it): a message that kills workers is not tried for ever.
        await _dead_letter(
            db,
            event=event,
            job=job,
            task_name=task_name,
            error=f"out of attempts after {job.attempts} runs (the last did not report back)",
            now=now,
        )
        return Skipped("out of attempts")
    job.status = JobStatus.running
    job.started_at = now
    job.finished_at = None
    job.attempts += 1
    job.celery_task_id = celery_task_id
    if event.published_at is None:
        # Run from a message the relay's record does not show (published again after a rerun
        # reset the row): count it as published so the relay does not send a third copy.
        event.published_at = now
    _hold(event, hold_until)
    await db.flush()
    return Started(
        job_id=job.id, topic=event.topic, payload=dict(event.payload), attempts=job.attempts
    )


async def attempts_of(db: AsyncSession, event_id: uuid.UUID) -> int | None:
    """How many runs the event's Job has started (None: it has no Job)."""
    return await db.scalar(select(Job.attempts).where(Job.outbox_event_id == event_id))


async def not_completed(db: AsyncSession, event_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Which of these events exist and are not completed (no lock: a hint for what to run)."""
    if not event_ids:
        return []
    rows = await db.scalars(
        select(OutboxEvent.id).where(
            one_of(OutboxEvent.id, event_ids), OutboxEvent.completed_at.is_(None)
        )
    )
    return list(rows)


async def hold(
    db: AsyncSession, event_ids: Sequence[uuid.UUID], until: datetime, error: str
) -> None:
    """These events wait in a message the worker holds for a retry, behind another event's
    transient `error` (REDCap down, say): their Jobs show it (retrying, not yet attempted) and
    their leases reach `until` (never shortened), so the relay sends no copies meanwhile."""
    if not event_ids:
        return
    await db.execute(
        update(OutboxEvent)
        .where(
            one_of(OutboxEvent.id, event_ids),
            OutboxEvent.completed_at.is_(None),
            or_(OutboxEvent.lease_until.is_(None), OutboxEvent.lease_until < until),
        )
        .values(lease_until=until, last_error=error)
        .execution_options(synchronize_session=False)
    )
    await db.execute(
        update(Job)
        .where(
            one_of(Job.outbox_event_id, event_ids),
            Job.status.in_([JobStatus.queued, JobStatus.retrying]),
        )
        .values(status=JobStatus.retrying, error=error)
        .execution_options(synchronize_session=False)
    )


async def succeed(
    db: AsyncSession,
    *,
    event_id: uuid.UUID,
    now: datetime,
    result_location: str | None = None,
) -> bool:
    """Job succeeded and event completed, in the caller's transaction with the service's work.

    False when a duplicate got there first (the event is already completed): its record stands.
    """
    event = await _lock_event(db, event_id)
    if event is None or event.completed_at is not None:
        return False
    job = await _job_of(db, event)
    job.status = JobStatus.succeeded
    job.finished_at = now
    job.progress = 100
    job.error = None
    job.result_location = result_location
    event.completed_at = now
    event.last_error = None
    await db.flush()
    return True


async def retrying(
    db: AsyncSession, *, event_id: uuid.UUID, error: str, now: datetime, hold_until: datetime
) -> bool:
    """Record a transient failure before the retry; False when the event completed meanwhile."""
    event = await _lock_event(db, event_id)
    if event is None or event.completed_at is not None:
        return False
    job = await _job_of(db, event)
    job.status = JobStatus.retrying
    job.error = error
    event.last_error = error
    _hold(event, hold_until)
    await db.flush()
    return True


async def interrupted(
    db: AsyncSession, *, event_id: uuid.UUID, celery_task_id: str | None, error: str, now: datetime
) -> bool:
    """The run `celery_task_id` was stopped before it could report (its worker lost the
    broker, say, and the message with it): the relay may publish the event again at once.
    False when it completed after all, or another run has taken it since."""
    event = await _lock_event(db, event_id)
    if event is None or event.completed_at is not None:
        return False
    job = await _job_of(db, event)
    if job.status != JobStatus.running or job.celery_task_id != celery_task_id:
        return False
    job.status = JobStatus.retrying
    job.error = error
    event.last_error = error
    # The one place a lease is cut short: the run it was held for is over.
    event.lease_until = now
    await db.flush()
    return True


async def _dead_letter(
    db: AsyncSession, *, event: OutboxEvent, job: Job, task_name: str, error: str, now: datetime
) -> DeadLetter:
    dead = DeadLetter(
        job_id=job.id,
        task_name=task_name,
        # Ids only, like the payload itself: enough to see what it was and to re-run it.
        args={"event_id": str(event.id), "topic": event.topic, "payload": event.payload},
        error=error,
        attempts=job.attempts,
        failed_at=now,
    )
    db.add(dead)
    job.status = JobStatus.failed
    job.error = error
    job.finished_at = now
    # Completed: the relay stops sending it. The dead letter is the record, and the way back.
    event.completed_at = now
    event.last_error = error
    await db.flush()
    return dead


async def fail(
    db: AsyncSession, *, event_id: uuid.UUID, task_name: str, error: str, now: datetime
) -> DeadLetter | None:
    """Failed for good: a dead letter, the job failed, the event completed. None if completed."""
    event = await _lock_event(db, event_id)
    if event is None or event.completed_at is not None:
        return None
    job = await _job_of(db, event)
    return await _dead_letter(db, event=event, job=job, task_name=task_name, error=error, now=now)


# --- admin ------------------------------------------------------------------------------


async def rerun(db: AsyncSession, *, dead_letter_id: uuid.UUID, now: datetime) -> DeadLetter:
    """Put a dead letter's event back in the outbox; the relay publishes it again."""
    dead = await db.get(DeadLetter, dead_letter_id, with_for_update=True)
    if dead is None:
        raise NotFound("No such dead letter.")
    if dead.rerun_at is not None:
        raise Conflict("This dead letter was already re-run.", error_code="already_rerun")
    job = await db.get(Job, dead.job_id) if dead.job_id is not None else None
    event = (
        await _lock_event(db, job.outbox_event_id)
        if job is not None and job.outbox_event_id is not None
        else None
    )
    if job is None or event is None:
        raise Conflict("Its job or outbox event no longer exists; nothing to re-run.")
    event.completed_at = None
    event.published_at = None
    event.lease_until = None
    event.last_error = None
    job.status = JobStatus.queued
    job.error = None
    job.attempts = 0  # a fresh budget of retries
    job.started_at = None
    job.finished_at = None
    job.celery_task_id = None
    job.result_location = None
    job.progress = 0
    dead.rerun_at = now
    dead.rerun_job_id = job.id
    await db.flush()
    return dead


async def get_job(db: AsyncSession, job_id: uuid.UUID) -> Job:
    job = await db.get(Job, job_id)
    if job is None:
        raise NotFound("No such job.")
    return job


def _jobs_query(
    *,
    member_of: uuid.UUID | None,
    study_id: uuid.UUID | None,
    status: JobStatus | None,
    kind: str | None,
) -> Select[Job]:
    query = select(Job)
    if member_of is not None:
        # Non-admins: jobs of their studies (of their sites, where limited to some).
        query = query.where(scope.visible_to(member_of))
    if study_id is not None:
        query = query.where(Job.study_id == study_id)
    if status is not None:
        query = query.where(Job.status == status)
    if kind is not None:
        query = query.where(Job.kind == kind)
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
) -> list[Job]:
    """Newest first. member_of: a non-admin's user id (only their studies); None for admins."""
    query = _jobs_query(member_of=member_of, study_id=study_id, status=status, kind=kind)
    rows = await db.scalars(
        query.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)
    )
    return list(rows)


async def list_dead_letters(
    db: AsyncSession, *, rerun: bool | None = None, limit: int = 50, offset: int = 0
) -> list[DeadLetter]:
    query = select(DeadLetter)
    if rerun is True:
        query = query.where(DeadLetter.rerun_at.is_not(None))
    elif rerun is False:
        query = query.where(DeadLetter.rerun_at.is_(None))
    rows = await db.scalars(
        query.order_by(DeadLetter.failed_at.desc(), DeadLetter.id).limit(limit).offset(offset)
    )
    return list(rows)
