"""The next batch of a connection: which submissions, and under which record, event and
instance. Called by the connection's one sender (server.redcap.sync holds its advisory lock),
so nothing here races another sender: no claims, no leases.

In one short transaction: the connection's pending states and the submissions waiting for
their first sync (an outbox row, no state yet), oldest first; each given its record id,
event, instrument and repeat instance (kept if it has one for the same record, event and
instrument, else the highest this connection's states hold for that record, + 1, in received
order), written as pending before any call. A call whose answer was lost is sent again with
the same instances: an update in REDCap, never a second instance.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.redcap import records
from server.redcap.candidates import State, candidates
from server.redcap.models import RedcapSyncState, SyncStatus
from server.redcap.numbering import claim, max_instances
from server.redcap.plan import Plan

NOTHING_TO_SEND = "Nothing to send: none of the mapped values is in this submission."


@dataclass
class Item:
    """One submission of a batch and the row it is sent as."""

    submission_id: uuid.UUID
    row: dict[str, Any]


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


async def _upsert(session: AsyncSession, rows: list[dict[str, Any]], keep: Sequence[str]) -> None:
    """Insert these states, or on a state that exists set the `keep` columns (and one more
    attempt)."""
    statement = pg_insert(RedcapSyncState)
    changes: dict[str, Any] = {name: statement.excluded[name] for name in keep}
    changes["attempts"] = RedcapSyncState.attempts + 1
    await session.execute(
        statement.on_conflict_do_update(index_elements=["submission_id"], set_=changes), rows
    )


def _new_state(plan: Plan, submission_id: uuid.UUID, now: datetime) -> dict[str, Any]:
    return {
        "submission_id": submission_id,
        "study_id": plan.study_id,
        "connection_id": plan.connection_id,
        "status": SyncStatus.pending,
        "attempts": 1,
        "error": None,
        "error_field": None,
        "created_at": now,
    }


async def _number_rows(
    session: AsyncSession, plan: Plan, chosen: list[tuple[State, str]], now: datetime
) -> list[int | None]:
    """Claim these states (with their record ids), in the order given, which is the order
    received: each keeps its instance, or is given the next of its record (with a repeating
    instrument), all written by one statement. Their instances, in the same order."""
    event: str | None = plan.document.get("event") or None
    instrument: str | None = plan.document.get("repeating_instrument") or None
    instances: list[int | None] = []
    for state, code in chosen:
        kept = state.instance if instrument else None
        if state.connection_id != plan.connection_id or (
            (state.record_id, state.event, state.instrument) != (code, event, instrument)
        ):
            # New, or the mapping or route changed since: its old instance means nothing here.
            kept = None
        instances.append(kept)
    if instrument:
        unnumbered = [
            (s, code) for (s, code), n in zip(chosen, instances, strict=True) if n is None
        ]
        highest = await max_instances(
            session,
            plan.connection_id,
            instrument,
            {code for _, code in unnumbered},
            event=event,
            # Only a state that holds an instance counts towards the highest: new states hold
            # none (checking every state against a whole batch's ids cost 20 ms a batch).
            leaving_out=[s.submission_id for s, _ in unnumbered if s.instance is not None],
        )
        for index, ((_state, code), kept) in enumerate(zip(chosen, instances, strict=True)):
            if kept is None:
                number_key = (code, event or "")
                highest[number_key] = highest.get(number_key, 0) + 1
                instances[index] = highest[number_key]
    if chosen:
        await claim(
            session,
            study_id=plan.study_id,
            connection_id=plan.connection_id,
            event=event,
            instrument=instrument,
            now=now,
            rows=[
                (state.submission_id, code, instance)
                for (state, code), instance in zip(chosen, instances, strict=True)
            ],
        )
    return instances


def _in_order(states: list[State]) -> list[State]:
    return sorted(states, key=lambda s: (s.received_at, str(s.submission_id)))


async def _number_and_build(
    session: AsyncSession, plan: Plan, states: list[State], now: datetime
) -> list[Item]:
    """A mapping that may have nothing to send for a submission: its rows are built first
    (under the connection's lock), those with nothing to send skipped, and no instance given to
    them. `states` are not changed."""
    document = plan.document
    values_of = records.value_builder(document)
    facts = await records.load_facts(session, [s.submission_id for s in states])
    nothing: list[dict[str, Any]] = []
    kept: list[tuple[State, records.SubmissionFacts, dict[str, str]]] = []
    for state in _in_order([s for s in states if s.submission_id in facts]):
        submission = facts[state.submission_id]
        values = values_of(submission)
        if values:
            kept.append((state, submission, values))
        else:
            nothing.append(
                {
                    **_new_state(plan, state.submission_id, now),
                    "status": SyncStatus.skipped,
                    "error": NOTHING_TO_SEND,
                }
            )
    instances = await _number_rows(
        session, plan, [(s, f.participant_code) for s, f, _ in kept], now
    )
    if nothing:
        await _upsert(session, nothing, ("connection_id", "status", "error", "error_field"))
    return [
        Item(state.submission_id, records.build_row(document, submission, values, instance))
        for (state, submission, values), instance in zip(kept, instances, strict=True)
    ]


async def next_batch(
    session: AsyncSession, plan: Plan, now: datetime, leaving_out: Collection[uuid.UUID] = ()
) -> tuple[list[Item], bool]:
    """The connection's next batch, numbered and written as pending; and whether it was full
    (more may be waiting). leaving_out: submissions of batches still with REDCap, or whose
    outcome is being written (the sender picks the next batch meanwhile)."""
    states = await candidates(session, plan, plan.batch_size, leaving_out)
    items = await _number_and_build(session, plan, states, now)
    return items, len(states) >= plan.batch_size
