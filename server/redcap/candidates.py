"""Which submissions a connection's next batch takes (server.redcap.batch numbers and writes
them): its pending states and the submissions waiting for their first sync, oldest first."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Integer, String, Uuid, cast, exists, literal, null, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from server.outbox import service as outbox
from server.outbox.models import OutboxEvent
from server.participants.models import Participant
from server.redcap.models import RedcapConnection, RedcapSyncState, SyncStatus
from server.redcap.plan import Plan
from server.submissions.models import Submission


def _routed_here(plan: Plan) -> Any:
    """Participants whose submissions go through this connection."""
    if plan.site_id is not None:
        return Participant.site_id == plan.site_id
    own_sites = select(RedcapConnection.site_id).where(
        RedcapConnection.study_id == plan.study_id, RedcapConnection.site_id.is_not(None)
    )
    return Participant.site_id.not_in(own_sites)


class State(Protocol):
    """What a batch reads of a candidate: a state's row (_STATE_COLUMNS) or a first sync's."""

    @property
    def submission_id(self) -> uuid.UUID: ...
    @property
    def connection_id(self) -> uuid.UUID | None: ...
    @property
    def record_id(self) -> str | None: ...
    @property
    def event(self) -> str | None: ...
    @property
    def instrument(self) -> str | None: ...
    @property
    def instance(self) -> int | None: ...
    @property
    def attempts(self) -> int: ...
    @property
    def participant_code(self) -> str: ...
    @property
    def received_at(self) -> datetime: ...


def _first_syncs(plan: Plan, limit: int) -> Any:
    """Submissions of this connection waiting in the outbox for their first sync (no state
    yet), oldest first: one range of ix_outbox_events_pending_by_topic, whose age is the
    submission's received_at (the API writes them so). Not every submission of the study: a
    study's history no longer weighs on every batch."""
    # On the outbox row's subject, not the joined submission: PostgreSQL then drops the rows
    # in flight (claimed, not yet settled: a few batches' worth in a backlog) before it looks
    # up their submissions, not after (45 ms a batch, down to 20).
    no_state = ~exists().where(RedcapSyncState.submission_id == OutboxEvent.subject_id)
    return (
        select(
            Submission.id.label("submission_id"),
            Submission.received_at.label("received_at"),
            cast(null(), Uuid).label("connection_id"),
            cast(null(), String).label("record_id"),
            cast(null(), String).label("event"),
            cast(null(), String).label("instrument"),
            cast(null(), Integer).label("instance"),
            literal(0, Integer).label("attempts"),
            Participant.participant_code,
        )
        .select_from(OutboxEvent)
        .join(Submission, Submission.id == OutboxEvent.subject_id)
        .join(Participant, Participant.id == Submission.participant_id)
        .where(
            OutboxEvent.topic == outbox.REDCAP_SYNC_SUBMISSION,
            OutboxEvent.finished_at.is_(None),
            Submission.study_id == plan.study_id,
            _routed_here(plan),
            no_state,
        )
        .order_by(OutboxEvent.created_at, OutboxEvent.id)
        .limit(limit)
    )


# What a batch reads of a state that exists (a State), its submission and participant joined.
_STATE_COLUMNS = (
    RedcapSyncState.submission_id,
    Submission.received_at,
    RedcapSyncState.connection_id,
    RedcapSyncState.record_id,
    RedcapSyncState.event,
    RedcapSyncState.instrument,
    RedcapSyncState.instance,
    RedcapSyncState.attempts,
    Participant.participant_code,
)


def _states(*columns: Any) -> Any:
    return (
        select(*_STATE_COLUMNS, *columns)
        .join(Submission, Submission.id == RedcapSyncState.submission_id)
        .join(Participant, Participant.id == Submission.participant_id)
    )


def _waiting(plan: Plan, limit: int, leaving_out: Collection[uuid.UUID]) -> Any:
    """This connection's pending states, oldest first, but those of `leaving_out`."""
    return (
        _states()
        .where(
            RedcapSyncState.connection_id == plan.connection_id,
            RedcapSyncState.status == SyncStatus.pending,
            RedcapSyncState.submission_id.not_in(list(leaving_out)),
        )
        .order_by(Submission.received_at, Submission.id)
        .limit(limit)
    )


async def candidates(
    session: AsyncSession, plan: Plan, limit: int, leaving_out: Collection[uuid.UUID]
) -> list[State]:
    """The connection's next `limit` submissions to send, in the order received: pending
    states and first syncs together, as plain rows."""
    first = _first_syncs(plan, limit).cte("first_syncs")
    waiting = _waiting(plan, limit, leaving_out).cte("waiting")
    both = union_all(select(first), select(waiting)).subquery("candidates")
    query = (
        select(
            both.c.submission_id,
            both.c.connection_id,
            both.c.record_id,
            both.c.event,
            both.c.instrument,
            both.c.instance,
            both.c.attempts,
            both.c.participant_code,
            both.c.received_at,
        )
        .order_by(both.c.received_at, both.c.submission_id)
        .limit(limit)
    )
    # A submission with two pending sync rows (none is written so today) comes once: the
    # batch's upsert may touch a row only once.
    unique: dict[uuid.UUID, State] = {}
    for row in (await session.execute(query)).all():
        unique.setdefault(row.submission_id, row)
    return list(unique.values())
