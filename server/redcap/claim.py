"""The claim: which submissions a sync sends, and under which record, event and instance.

In one short transaction of its own (`own_transaction`), committed before any call to REDCap:
the batch's states are locked (the connection row first, so claims of one connection take
turns; then FOR UPDATE SKIP LOCKED on PostgreSQL), given their record id, event, instrument
and repeat instance (the highest this connection's states hold for that record and
instrument, + 1, in received order) and marked claimed: pending, no error, last_attempt_at
now. A claim is someone else's until it is REDCAP_SYNC_LEASE_SECONDS old.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import exists, func, literal, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.db import one_of
from server.outbox import service as outbox
from server.outbox.models import OutboxEvent
from server.participants.models import Participant
from server.redcap import records
from server.redcap.models import RedcapConnection, RedcapSyncState, SyncStatus
from server.submissions.models import Submission

NOTHING_TO_SEND = "Nothing to send: none of the mapped values is in this submission."
INTERRUPTED = "The worker stopped before REDCap answered; it is sent again."

# The claims this process has made (a prefork child runs one task at a time): what it lets go
# of if it is stopped mid-call (release_held), so the next run need not wait out the lease.
_held: list[tuple[list[uuid.UUID], datetime]] = []


@dataclass
class Plan:
    """A sync through one connection, as plain values (they outlive the claim's session)."""

    connection_id: uuid.UUID
    study_id: uuid.UUID
    site_id: uuid.UUID | None
    batch_size: int
    document: dict[str, Any]
    lease: timedelta
    postgresql: bool


@dataclass
class Item:
    """One claimed submission and the row it is sent as."""

    submission_id: uuid.UUID
    row: dict[str, Any]


@dataclass
class Claim:
    """The claimed batch (empty when there is nothing to send) and this submission's state."""

    items: list[Item] = field(default_factory=list)
    own_status: SyncStatus = SyncStatus.pending
    own_error: str | None = None
    # The batch took all the room it had: more of the connection's submissions may be waiting.
    full: bool = False
    # When (time.monotonic()): its lease runs from about then.
    claimed_at: float = field(default_factory=time.monotonic)
    # This submission is in a batch another worker is sending: seconds until that claim
    # lapses (nothing was claimed here).
    held_elsewhere_s: float | None = None


@asynccontextmanager
async def own_transaction(db: AsyncSession) -> AsyncIterator[AsyncSession]:
    """A transaction of its own on the caller's database, committed when the block ends.

    A connection of its own from the caller's engine; bound to a connection (the test
    harness), a savepoint on it.
    """
    async with (
        AsyncSession(
            bind=db.bind,
            expire_on_commit=False,
            autoflush=False,
            join_transaction_mode="create_savepoint",
        ) as session,
        session.begin(),
    ):
        yield session


def is_claimed(state: RedcapSyncState, now: datetime, lease: timedelta) -> bool:
    return (
        state.status == SyncStatus.pending
        and state.error is None
        and state.last_attempt_at is not None
        and state.last_attempt_at > now - lease
    )


def _insert(session: AsyncSession) -> Any:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


async def _ensure_state(
    session: AsyncSession, plan: Plan, submission_id: uuid.UUID, now: datetime
) -> None:
    await session.execute(
        _insert(session)(RedcapSyncState)
        .values(
            submission_id=submission_id,
            study_id=plan.study_id,
            connection_id=plan.connection_id,
            status=SyncStatus.pending,
            attempts=0,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["submission_id"])
    )


def _routed_here(plan: Plan) -> Any:
    """Participants whose submissions go through this connection."""
    if plan.site_id is not None:
        return Participant.site_id == plan.site_id
    own_sites = select(RedcapConnection.site_id).where(
        RedcapConnection.study_id == plan.study_id, RedcapConnection.site_id.is_not(None)
    )
    return Participant.site_id.not_in(own_sites)


async def _ensure_queued_states(
    session: AsyncSession, plan: Plan, limit: int, now: datetime
) -> None:
    """States for the oldest submissions of this connection that wait in the outbox for sync
    and have none yet (a state is made when a claim first sees its submission): one
    INSERT ... SELECT, nothing travels through Python."""
    queued = exists().where(
        OutboxEvent.subject_id == Submission.id,
        OutboxEvent.topic == outbox.REDCAP_SYNC_SUBMISSION,
        OutboxEvent.completed_at.is_(None),
    )
    has_state = exists().where(RedcapSyncState.submission_id == Submission.id)
    columns = RedcapSyncState.__table__.c
    waiting = (
        select(
            Submission.id,
            literal(plan.study_id, columns.study_id.type),
            literal(plan.connection_id, columns.connection_id.type),
            literal(SyncStatus.pending, columns.status.type),
            literal(0, columns.attempts.type),
            literal(now, columns.created_at.type),
        )
        .join(Participant, Participant.id == Submission.participant_id)
        .where(Submission.study_id == plan.study_id, _routed_here(plan), queued, ~has_state)
        .order_by(Submission.received_at, Submission.id)
        .limit(limit)
    )
    await session.execute(
        _insert(session)(RedcapSyncState)
        .from_select(
            ["submission_id", "study_id", "connection_id", "status", "attempts", "created_at"],
            waiting,
        )
        .on_conflict_do_nothing(index_elements=["submission_id"])
    )


class _State(Protocol):
    """What a claim reads of a state: an ORM row (its own) or a plain row (the others)."""

    submission_id: uuid.UUID
    connection_id: uuid.UUID | None
    record_id: str | None
    event: str | None
    instrument: str | None
    instance: int | None
    attempts: int


async def _claimable_others(
    session: AsyncSession, plan: Plan, own_id: uuid.UUID | None, now: datetime, limit: int
) -> list[_State]:
    unclaimed = (
        RedcapSyncState.error.is_not(None)
        | RedcapSyncState.last_attempt_at.is_(None)
        | (RedcapSyncState.last_attempt_at <= now - plan.lease)
    )
    # Plain rows, not ORM objects: the claim writes them with one bulk UPDATE (_prepare).
    query = (
        select(
            RedcapSyncState.submission_id,
            RedcapSyncState.connection_id,
            RedcapSyncState.record_id,
            RedcapSyncState.event,
            RedcapSyncState.instrument,
            RedcapSyncState.instance,
            RedcapSyncState.attempts,
        )
        .join(Submission, Submission.id == RedcapSyncState.submission_id)
        .where(
            RedcapSyncState.connection_id == plan.connection_id,
            RedcapSyncState.status == SyncStatus.pending,
            unclaimed,
        )
        .order_by(Submission.received_at, Submission.id)
        .limit(limit)
    )
    if own_id is not None:
        query = query.where(RedcapSyncState.submission_id != own_id)
    if plan.postgresql:
        query = query.with_for_update(skip_locked=True, of=RedcapSyncState)
    return list((await session.execute(query)).all())


# Record by record (LATERAL; the aggregate keeps the planner from flattening it into one scan),
# each an index range scan of ix_redcap_sync_states_numbering. As one query with
# `record_id IN (...)` PostgreSQL read every state of the connection and matched each against
# the batch's record ids: the cost grew with the connection's history, claim after claim.
_PG_MAX_INSTANCES = text(
    """
    SELECT r.record_id, m.event, m.top
    FROM unnest(CAST(:record_ids AS varchar[])) AS r(record_id)
    CROSS JOIN LATERAL (
        SELECT s.event, max(s.instance) AS top
        FROM redcap_sync_states AS s
        WHERE s.connection_id = :connection_id AND s.instrument = :instrument
          AND s.record_id = r.record_id AND s.instance IS NOT NULL
          AND s.submission_id <> ALL(CAST(:leaving_out AS uuid[]))
        GROUP BY s.event
    ) AS m
    """
)


async def max_instances(
    session: AsyncSession,
    connection_id: uuid.UUID,
    instrument: str,
    record_ids: set[str],
    *,
    leaving_out: Sequence[uuid.UUID] = (),
) -> dict[tuple[str, str], int]:
    """(record id, event or "") -> the highest instance this connection's states hold (but the
    states of `leaving_out`, whose stored instance is about to be replaced)."""
    if session.get_bind().dialect.name == "postgresql":
        rows = await session.execute(
            _PG_MAX_INSTANCES,
            {
                "record_ids": sorted(record_ids),
                "connection_id": connection_id,
                "instrument": instrument,
                "leaving_out": list(leaving_out),
            },
        )
        return {(str(r), e or ""): int(n or 0) for r, e, n in rows}
    query = (
        select(RedcapSyncState.record_id, RedcapSyncState.event, func.max(RedcapSyncState.instance))
        .where(
            RedcapSyncState.connection_id == connection_id,
            RedcapSyncState.instrument == instrument,
            RedcapSyncState.record_id.in_(record_ids),
            RedcapSyncState.instance.is_not(None),
        )
        .group_by(RedcapSyncState.record_id, RedcapSyncState.event)
    )
    if leaving_out:
        query = query.where(RedcapSyncState.submission_id.not_in(leaving_out))
    rows = await session.execute(query)
    return {(str(r), e or ""): int(n or 0) for r, e, n in rows}


# The claim's write on PostgreSQL: one statement for the whole batch (an UPDATE per row, even
# in one executemany, costs ~0.3 ms each: a sixth of a 500-row claim).
_PG_CLAIM = text(
    """
    UPDATE redcap_sync_states AS s
    SET connection_id = :connection_id, record_id = v.record_id, event = :event,
        instrument = :instrument, instance = v.instance, status = 'pending',
        attempts = s.attempts + 1, last_attempt_at = :now, error = NULL, error_field = NULL
    FROM unnest(CAST(:ids AS uuid[]), CAST(:record_ids AS varchar[]),
                CAST(:instances AS integer[])) AS v(id, record_id, instance)
    WHERE s.submission_id = v.id
    """
)


async def _prepare(
    session: AsyncSession, plan: Plan, states: list[_State], now: datetime
) -> list[Item]:
    """Fix each state's record, event, instrument and instance; build its row. Claims them
    (those with nothing to send are skipped) in one bulk UPDATE; `states` are not changed."""
    document = plan.document
    event: str | None = document.get("event") or None
    instrument: str | None = document.get("repeating_instrument") or None
    facts = await records.load_facts(session, [s.submission_id for s in states])
    ordered = sorted(
        (s for s in states if s.submission_id in facts),
        key=lambda s: (facts[s.submission_id].received_at, str(s.submission_id)),
    )
    nothing: list[dict[str, Any]] = []
    # (state, its submission, its values, its instance: kept, or None to number)
    kept: list[tuple[_State, records.SubmissionFacts, dict[str, str], int | None]] = []
    for state in ordered:
        submission = facts[state.submission_id]
        values = records.field_values(document, submission)
        if not values:
            nothing.append(
                {
                    "submission_id": state.submission_id,
                    "status": SyncStatus.skipped,
                    "error": NOTHING_TO_SEND,
                }
            )
            continue
        key = (submission.participant_code, event, instrument)
        instance = state.instance if instrument else None
        if state.connection_id != plan.connection_id or (
            (state.record_id, state.event, state.instrument) != key
        ):
            # New, or the mapping or route changed since: its old instance means nothing here.
            instance = None
        kept.append((state, submission, values, instance))
    if instrument:
        unnumbered = [(s, f) for s, f, _, n in kept if n is None]
        highest = await max_instances(
            session,
            plan.connection_id,
            instrument,
            {f.participant_code for _, f in unnumbered},
            # Only a state that holds an instance counts towards the highest: new states hold
            # none (checking every state against a whole batch's ids cost 20 ms a claim).
            leaving_out=[s.submission_id for s, _ in unnumbered if s.instance is not None],
        )
        numbered: dict[uuid.UUID, int] = {}
        for state, submission in unnumbered:
            number_key = (submission.participant_code, event or "")
            highest[number_key] = highest.get(number_key, 0) + 1
            numbered[state.submission_id] = highest[number_key]
        kept = [(s, f, v, numbered.get(s.submission_id, n)) for s, f, v, n in kept]
    claimed = [
        {
            "submission_id": state.submission_id,
            "connection_id": plan.connection_id,
            "record_id": submission.participant_code,
            "event": event,
            "instrument": instrument,
            "instance": instance,
            "status": SyncStatus.pending,
            "attempts": state.attempts + 1,
            "last_attempt_at": now,
            "error": None,
            "error_field": None,
        }
        for state, submission, _, instance in kept
    ]
    if claimed and plan.postgresql:
        await session.execute(
            _PG_CLAIM,
            {
                "ids": [c["submission_id"] for c in claimed],
                "record_ids": [c["record_id"] for c in claimed],
                "instances": [c["instance"] for c in claimed],
                "connection_id": plan.connection_id,
                "event": event,
                "instrument": instrument,
                "now": now,
            },
        )
        claimed = []
    for changes in (claimed, nothing):
        if changes:
            # ORM bulk UPDATE by primary key: one executemany.
            await session.execute(update(RedcapSyncState), changes)
    return [
        Item(state.submission_id, records.build_row(document, submission, values, instance))
        for state, submission, values, instance in kept
    ]


async def _take_turn(session: AsyncSession, plan: Plan) -> None:
    if plan.postgresql:
        # One claim per connection at a time: instance numbers are read, then written.
        await session.execute(
            select(RedcapConnection.id)
            .where(RedcapConnection.id == plan.connection_id)
            .with_for_update()
        )


def forget_held() -> None:
    """A new task: the claims of the one before are settled, one way or another."""
    _held.clear()


async def release_held(session: AsyncSession) -> int:
    """Let go of this process's claims still outstanding: those states are claimable at once,
    with INTERRUPTED as their error. A state settled since (synced, failed, claimed anew) is
    left alone: only the exact claim (its submissions, its last_attempt_at) is let go."""
    held, _held[:] = list(_held), []
    released = 0
    for submission_ids, claimed_at in held:
        result = await session.execute(
            update(RedcapSyncState)
            .where(
                one_of(session, RedcapSyncState.submission_id, submission_ids),
                RedcapSyncState.status == SyncStatus.pending,
                RedcapSyncState.error.is_(None),
                RedcapSyncState.last_attempt_at == claimed_at,
            )
            .values(error=INTERRUPTED)
            .execution_options(synchronize_session=False)
        )
        released += int(getattr(result, "rowcount", 0) or 0)
    return released


def _held_as(items: list[Item], now: datetime) -> list[Item]:
    if items:
        _held.append(([item.submission_id for item in items], now))
    return items


async def claim_batch(
    session: AsyncSession, plan: Plan, submission_id: uuid.UUID, now: datetime
) -> Claim:
    await _take_turn(session, plan)
    await _ensure_state(session, plan, submission_id, now)
    own_query = (
        select(RedcapSyncState)
        .where(RedcapSyncState.submission_id == submission_id)
        .execution_options(populate_existing=True)
    )
    if plan.postgresql:
        own_query = own_query.with_for_update()
    own = (await session.scalars(own_query)).one()
    if own.status in (SyncStatus.synced, SyncStatus.failed):
        return Claim(own_status=own.status, own_error=own.error)
    if is_claimed(own, now, plan.lease):
        assert own.last_attempt_at is not None
        left = (own.last_attempt_at + plan.lease - now).total_seconds()
        return Claim(held_elsewhere_s=max(1.0, min(left, 60.0)))
    states: list[_State] = [own]
    room = plan.batch_size - 1
    if room > 0:
        await _ensure_queued_states(session, plan, room, now)
        states += await _claimable_others(session, plan, submission_id, now, room)
    items = _held_as(await _prepare(session, plan, states, now), now)
    sent = any(item.submission_id == submission_id for item in items)
    return Claim(
        items=items,
        own_status=SyncStatus.pending if sent else SyncStatus.skipped,
        own_error=None if sent else NOTHING_TO_SEND,
        full=len(states) >= plan.batch_size,
    )


async def claim_next(session: AsyncSession, plan: Plan, now: datetime) -> Claim:
    """The connection's next batch, oldest first, with no submission of the caller's own: what
    a sync whose batch came back full sends next (server.redcap.sync, the backlog)."""
    await _take_turn(session, plan)
    await _ensure_queued_states(session, plan, plan.batch_size, now)
    states = await _claimable_others(session, plan, None, now, plan.batch_size)
    items = _held_as(await _prepare(session, plan, states, now), now)
    return Claim(items=items, full=len(states) >= plan.batch_size)
