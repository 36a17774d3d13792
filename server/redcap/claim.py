"""The claim: which submissions a sync sends, and under which record, event and instance.

In one short transaction of its own (`own_transaction`), committed before any call to REDCap:
the batch's states are locked (the connection row first, so claims of one connection take
turns; then FOR UPDATE SKIP LOCKED on PostgreSQL), given their record id, event, instrument
and repeat instance (the highest this connection's states hold for that record and
instrument, + 1, in received order) and marked claimed: pending, no error, last_attempt_at
now. A claim is someone else's until it is REDCAP_SYNC_LEASE_SECONDS old.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.outbox import service as outbox
from server.outbox.models import OutboxEvent
from server.participants.models import Participant
from server.redcap import records
from server.redcap.errors import TransientRedcapError
from server.redcap.models import RedcapConnection, RedcapSyncState, SyncStatus
from server.submissions.models import Submission

NOTHING_TO_SEND = "Nothing to send: none of the mapped values is in this submission."


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


async def _ensure_states(
    session: AsyncSession, plan: Plan, submission_ids: Sequence[uuid.UUID], now: datetime
) -> None:
    if not submission_ids:
        return
    statement = (
        _insert(session)(RedcapSyncState)
        .values(
            [
                {
                    "submission_id": submission_id,
                    "study_id": plan.study_id,
                    "connection_id": plan.connection_id,
                    "status": SyncStatus.pending,
                    "attempts": 0,
                    "created_at": now,
                }
                for submission_id in submission_ids
            ]
        )
        .on_conflict_do_nothing(index_elements=["submission_id"])
    )
    await session.execute(statement)


def _routed_here(plan: Plan) -> Any:
    """Participants whose submissions go through this connection."""
    if plan.site_id is not None:
        return Participant.site_id == plan.site_id
    own_sites = select(RedcapConnection.site_id).where(
        RedcapConnection.study_id == plan.study_id, RedcapConnection.site_id.is_not(None)
    )
    return Participant.site_id.not_in(own_sites)


async def _queued_without_state(session: AsyncSession, plan: Plan, limit: int) -> list[uuid.UUID]:
    """Submissions of this connection waiting in the outbox for sync that have no state yet."""
    queued = exists().where(
        OutboxEvent.subject_id == Submission.id,
        OutboxEvent.topic == outbox.REDCAP_SYNC_SUBMISSION,
        OutboxEvent.completed_at.is_(None),
    )
    has_state = exists().where(RedcapSyncState.submission_id == Submission.id)
    rows = await session.scalars(
        select(Submission.id)
        .join(Participant, Participant.id == Submission.participant_id)
        .where(Submission.study_id == plan.study_id, _routed_here(plan), queued, ~has_state)
        .order_by(Submission.received_at, Submission.id)
        .limit(limit)
    )
    return list(rows)


async def _claimable_others(
    session: AsyncSession, plan: Plan, own_id: uuid.UUID, now: datetime, limit: int
) -> list[RedcapSyncState]:
    unclaimed = (
        RedcapSyncState.error.is_not(None)
        | RedcapSyncState.last_attempt_at.is_(None)
        | (RedcapSyncState.last_attempt_at <= now - plan.lease)
    )
    query = (
        select(RedcapSyncState)
        .join(Submission, Submission.id == RedcapSyncState.submission_id)
        .where(
            RedcapSyncState.connection_id == plan.connection_id,
            RedcapSyncState.status == SyncStatus.pending,
            RedcapSyncState.submission_id != own_id,
            unclaimed,
        )
        .order_by(Submission.received_at, Submission.id)
        .limit(limit)
        .execution_options(populate_existing=True)
    )
    if plan.postgresql:
        query = query.with_for_update(skip_locked=True, of=RedcapSyncState)
    return list(await session.scalars(query))


async def max_instances(
    session: AsyncSession, connection_id: uuid.UUID, instrument: str, record_ids: set[str]
) -> dict[tuple[str, str], int]:
    """(record id, event or "") -> the highest instance this connection's states hold."""
    rows = await session.execute(
        select(RedcapSyncState.record_id, RedcapSyncState.event, func.max(RedcapSyncState.instance))
        .where(
            RedcapSyncState.connection_id == connection_id,
            RedcapSyncState.instrument == instrument,
            RedcapSyncState.record_id.in_(record_ids),
            RedcapSyncState.instance.is_not(None),
        )
        .group_by(RedcapSyncState.record_id, RedcapSyncState.event)
    )
    return {(str(r), e or ""): int(n or 0) for r, e, n in rows}


async def _prepare(
    session: AsyncSession, plan: Plan, states: list[RedcapSyncState], now: datetime
) -> list[Item]:
    """Fix each state's record, event, instrument and instance; build its row. Claims them."""
    document = plan.document
    event: str | None = document.get("event") or None
    instrument: str | None = document.get("repeating_instrument") or None
    facts = await records.load_facts(session, [s.submission_id for s in states])
    ordered = sorted(
        (s for s in states if s.submission_id in facts),
        key=lambda s: (facts[s.submission_id].received_at, str(s.submission_id)),
    )
    kept: list[tuple[RedcapSyncState, records.SubmissionFacts, dict[str, str]]] = []
    for state in ordered:
        submission = facts[state.submission_id]
        values = records.field_values(document, submission)
        if not values:
            state.status = SyncStatus.skipped
            state.error = NOTHING_TO_SEND
            continue
        key = (submission.participant_code, event, instrument)
        moved = state.connection_id != plan.connection_id
        if moved or (state.record_id, state.event, state.instrument) != key:
            # New, or the mapping or route changed since: its old instance means nothing here.
            state.record_id, state.event, state.instrument = key
            state.instance = None
        if not instrument:
            state.instance = None
        state.connection_id = plan.connection_id
        state.status = SyncStatus.pending
        state.attempts += 1
        state.last_attempt_at = now
        state.error = state.error_field = None
        kept.append((state, submission, values))
    await session.flush()
    if instrument:
        unnumbered = [s for s, _, _ in kept if s.instance is None]
        highest = await max_instances(
            session, plan.connection_id, instrument, {s.record_id or "" for s in unnumbered}
        )
        for state in unnumbered:
            number_key = (state.record_id or "", state.event or "")
            highest[number_key] = highest.get(number_key, 0) + 1
            state.instance = highest[number_key]
    await session.flush()
    return [
        Item(state.submission_id, records.build_row(document, submission, values, state.instance))
        for state, submission, values in kept
    ]


async def claim_batch(
    session: AsyncSession, plan: Plan, submission_id: uuid.UUID, now: datetime
) -> Claim:
    if plan.postgresql:
        # One claim per connection at a time: instance numbers are read, then written.
        await session.execute(
            select(RedcapConnection.id)
            .where(RedcapConnection.id == plan.connection_id)
            .with_for_update()
        )
    await _ensure_states(session, plan, [submission_id], now)
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
        raise TransientRedcapError(
            "This submission is in a batch another worker is sending to REDCap.",
            retry_after=max(1.0, min(left, 60.0)),
        )
    states = [own]
    room = plan.batch_size - 1
    if room > 0:
        await _ensure_states(session, plan, await _queued_without_state(session, plan, room), now)
        states += await _claimable_others(session, plan, submission_id, now, room)
    items = await _prepare(session, plan, states, now)
    return Claim(items=items, own_status=own.status, own_error=own.error)
