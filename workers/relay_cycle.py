"""One cycle of the outbox relay (workers.relay): which rows are due, publishing them, and
recording it (publish time, lease, the event's Job), in one transaction the caller commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, case, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.db import one_of
from server.jobs import service as jobs_service
from server.jobs.models import Job, JobStatus
from server.outbox import topics
from server.outbox.models import OutboxEvent

# publish(topic, event_id): send the topic's task with the event id as its only argument.
Publish = Callable[[str, uuid.UUID], Awaitable[None]]


class BatchPublisher(Protocol):
    """A publisher that can also send a whole batch at once (workers.publisher)."""

    async def __call__(self, topic: str, event_id: uuid.UUID) -> None: ...

    async def publish_many(self, messages: Sequence[tuple[str, uuid.UUID]]) -> None: ...


# Each publish of the same row waits twice as long as the one before, up to this many leases:
# a long queue (REDCap's rate limit, say) is not flooded with copies of messages still in it.
MAX_LEASE_FACTOR = 8
UNROUTED_TASK = "outbox.unrouted"


@dataclass
class RelayResult:
    published: int = 0
    republished: int = 0  # of those, published before (a lease ran out)
    jobs_created: int = 0
    dead_lettered: int = 0  # rows of a topic no task handles
    error: str | None = None  # why publishing stopped (the broker is down, say)

    @property
    def ok(self) -> bool:
        return self.error is None


def lease_for(lease: timedelta, publish_attempts: int) -> timedelta:
    """The lease after a row's n-th publish: lease, 2 x lease, 4 x lease, ... up to 8 x."""
    factor: int = min(2 ** max(publish_attempts - 1, 0), MAX_LEASE_FACTOR)
    return lease * factor


async def _publish(
    publish: Publish | BatchPublisher, events: list[Due]
) -> tuple[list[Due], str | None]:
    """(the events that went, why the rest did not). With publish_many it is all or none: a
    batch that failed may have sent some, and sending those again is harmless."""
    many = getattr(publish, "publish_many", None)
    if many is not None:
        try:
            await many([(e.topic, e.id) for e in events])
        except Exception as exc:
            return [], jobs_service.safe_error(exc)
        return events, None
    sent: list[Due] = []
    for event in events:
        try:
            await publish(event.topic, event.id)
        except Exception as exc:
            return sent, jobs_service.safe_error(exc)
        sent.append(event)
    return sent, None


@dataclass(slots=True)
class Due:
    """A due row as the relay needs it: plain values, no ORM object to track and flush."""

    id: uuid.UUID
    topic: str
    payload: dict[str, Any]
    subject_id: uuid.UUID | None
    created_at: datetime
    published_at: datetime | None
    publish_attempts: int


_DUE_COLUMNS = (
    OutboxEvent.id,
    OutboxEvent.topic,
    OutboxEvent.payload,
    OutboxEvent.subject_id,
    OutboxEvent.created_at,
    OutboxEvent.published_at,
    OutboxEvent.publish_attempts,
)


def _unrouted() -> ColumnElement[bool]:
    """Topics no task handles: NOT IN the routed ones, written as the ranges between them, each
    a range of the unpublished index (NOT IN would read every unpublished row)."""
    names = sorted(topics.ROUTES)
    between = [and_(OutboxEvent.topic > a, OutboxEvent.topic < b) for a, b in pairwise(names)]
    return or_(OutboxEvent.topic < names[0], *between, OutboxEvent.topic > names[-1])


async def _due(
    db: AsyncSession, now: datetime, batch: int, held: Collection[str] = ()
) -> list[Due]:
    """Up to `batch` due rows: lapsed leases first (the longest lapsed first), then rows never
    published, oldest first, but those of `held` topics (their queue is full: they wait here,
    where a backlog costs nothing, rather than in the broker). Each look is one range of a
    partial index: lapsed leases, then each topic's unpublished rows."""
    lapsed = (
        select(*_DUE_COLUMNS)
        .where(
            OutboxEvent.completed_at.is_(None),
            OutboxEvent.published_at.is_not(None),
            OutboxEvent.lease_until < now,
        )
        .order_by(OutboxEvent.lease_until)
    )
    fresh = (
        select(*_DUE_COLUMNS)
        .where(OutboxEvent.completed_at.is_(None), OutboxEvent.published_at.is_(None))
        .order_by(OutboxEvent.created_at, OutboxEvent.id)
    )
    ranges = [OutboxEvent.topic == t for t in sorted(topics.ROUTES) if t not in held]

    async def take(query: Any, limit: int) -> list[Due]:
        query = query.limit(limit).with_for_update(skip_locked=True)
        return [Due(*row) for row in await db.execute(query)]

    events = await take(lapsed, batch)
    if len(events) >= batch:
        return events
    new: list[Due] = []
    for where in [*ranges, _unrouted()]:
        # Each topic may fill the batch: oldest first across topics, whatever their mix.
        new += await take(fresh.where(where), batch - len(events))
    # Rows locked here and not taken are free again at commit, a few milliseconds on.
    new.sort(key=lambda e: (e.created_at, e.id))
    return events + new[: batch - len(events)]


async def _mark_published(
    db: AsyncSession, events: list[Due], now: datetime, lease: timedelta
) -> None:
    """One UPDATE for the batch: published now, one more attempt, the lease for that attempt
    (lease_for, as a CASE on the attempts so far)."""
    attempts = OutboxEvent.publish_attempts
    steps = range(MAX_LEASE_FACTOR.bit_length() - 1)  # attempts 0, 1, 2 -> x1, x2, x4
    lease_until = case(
        *((attempts == n, now + lease_for(lease, n + 1)) for n in steps),
        else_=now + lease * MAX_LEASE_FACTOR,
    )
    await db.execute(
        update(OutboxEvent)
        .where(one_of(OutboxEvent.id, [e.id for e in events]))
        .values(published_at=now, publish_attempts=attempts + 1, lease_until=lease_until)
        .execution_options(synchronize_session=False)
    )


async def _mark_published_with_jobs(
    db: AsyncSession, events: list[Due], now: datetime, lease: timedelta
) -> int:
    """Published now with the lease for the attempt (lease_for), and each event's Job made if
    it has none: how many Jobs it made."""
    await _mark_published(db, events, now, lease)
    return await jobs_service.ensure_jobs(db, events)


async def relay_once(
    db: AsyncSession,
    publish: Publish | BatchPublisher,
    *,
    now: datetime,
    lease: timedelta,
    batch: int,
    held: Collection[str] = (),
) -> RelayResult:
    """Publish up to `batch` due rows (see _due; `held`: topics whose queue is full). The
    caller commits.

    A failed publish leaves the rows it did not send as they are, for the next cycle.
    """
    result = RelayResult()
    events = await _due(db, now, batch, held)
    routed: list[Due] = []
    for event in events:
        if event.topic not in topics.ROUTES:
            # Not a broker problem, and it would block every row behind it: the dead letter
            # keeps it, and a rerun sends it once a task handles the topic.
            await jobs_service.ensure_jobs(db, [event])
            await jobs_service.fail(
                db,
                event_id=event.id,
                task_name=UNROUTED_TASK,
                error=f"no task handles topic {event.topic!r}",
                now=now,
            )
            result.dead_lettered += 1
            continue
        routed.append(event)
    published, result.error = await _publish(publish, routed)
    if published:
        result.jobs_created = await _mark_published_with_jobs(db, published, now, lease)
    result.published = len(published)
    result.republished = sum(1 for e in published if e.published_at is not None)
    return result


async def resend_waiting(db: AsyncSession, *, now: datetime) -> int:
    """The broker came back as a new server: the messages of rows published and not yet
    taken up (Job queued, or retrying: Celery holds a retry's message until its countdown)
    may be gone with the old one. Their leases end now, so the next cycle sends them again.
    A running task is left to finish, or to hand its row back if it is stopped (workers.events).
    """
    waiting = select(Job.outbox_event_id).where(
        Job.status.in_([JobStatus.queued, JobStatus.retrying]), Job.outbox_event_id.is_not(None)
    )
    result = await db.execute(
        update(OutboxEvent)
        .where(
            OutboxEvent.completed_at.is_(None),
            OutboxEvent.published_at.is_not(None),
            OutboxEvent.lease_until > now,
            OutboxEvent.id.in_(waiting),
        )
        .values(lease_until=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def held_topics(publish: Publish | BatchPublisher, limit: int) -> frozenset[str]:
    """Topics whose queue holds `limit` messages or more: their new rows wait in the outbox
    until workers catch up. A backlog (after an outage, a bulk import) is not copied into the
    broker's memory all at once, and rows a REDCap batch settles first (it sends the oldest of
    its connection, whoever's message it runs) are never published at all. Nothing is held
    where the broker cannot tell (or does not answer: publishing will say so)."""
    depths_of = getattr(publish, "queue_depths", None)
    if depths_of is None:
        return frozenset()
    try:
        depths: dict[str, int] = await depths_of(sorted({r.queue for r in topics.ROUTES.values()}))
    except Exception:
        return frozenset()
    return frozenset(t for t, r in topics.ROUTES.items() if depths.get(r.queue, 0) >= limit)
