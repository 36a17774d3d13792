"""Submissions into REDCap: one sender per connection, in order, never a second record or
repeat instance.

`sync_submission(db, settings, submission_id)` is the worker's entry point (outbox topic
`redcap.sync_submission`):

- Idempotent: a submission already synced or failed returns without a call to REDCap
  (`resync` puts a failed one back).
- Routing: the participant's site connection if there is one, else the study-wide one. No
  connection, a disabled one, or no mapping: the state is `skipped`, with the reason.
- One sender per connection: a PostgreSQL advisory lock on the connection, held on a
  connection of its own for the whole loop, waited for by any other task of the same
  connection. REDCap numbers instances itself and bans clients past its request threshold, so
  a project never has two senders; the server frees the lock when the holder's connection
  dies (a killed worker), so the next task takes over at once.
- The loop, while this submission is unsettled, then while batches come back full (for up to
  BACKLOG_SECONDS): one transaction picks the connection's next batch, oldest first, and
  numbers it (server.redcap.batch); `import_records` runs with no transaction open; a second
  transaction writes the outcome. A re-send after a lost answer carries the same instances.
- Shape: before a batch is sent, the project is checked against the mapping
  (server.redcap.shape); a project changed since the mapping was saved fails the batch's
  submissions with the mapping error, and nothing is sent.
- Throttle: every call waits for a slot of its REDCap server's budget (server.redcap.throttle).
- Transient failures (unreachable, timeout, HTTP 5xx): the states stay pending with the error;
  TransientRedcapError if this submission is not settled (its task retries).
- REDCap's rejections: its message says which rows it refused; those submissions fail with
  REDCap's message and the field, the others are imported again in a new call.
- The outbox rows of the other submissions a batch settled are finished with it (succeeded,
  or failed with REDCap's message): their tasks find nothing to do.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Collection
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import structlog
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from server.core.config import Settings
from server.core.models import utcnow
from server.redcap import importing, routing, shape
from server.redcap.batch import Item, next_batch, own_transaction
from server.redcap.client import RedcapClient
from server.redcap.errors import RedcapRejected, TransientRedcapError
from server.redcap.models import RedcapSyncState, SyncStatus
from server.redcap.plan import Plan
from server.redcap.routing import SyncOutcome, resync

__all__ = ["BACKLOG_SECONDS", "SyncOutcome", "resync", "sync_submission"]
log = structlog.get_logger(__name__)
T = TypeVar("T")

# How long a sender goes on with its connection's backlog once its own submission is settled.
BACKLOG_SECONDS = 60.0
SETTLED = (SyncStatus.synced, SyncStatus.failed, SyncStatus.skipped)
_LOCK = text("SELECT pg_advisory_lock(hashtextextended(:key, 0))")
_UNLOCK = text("SELECT pg_advisory_unlock(hashtextextended(:key, 0))")


# ----- the sender --------------------------------------------------------------------------------
def sender_key(connection_id: uuid.UUID) -> str:
    """The connection's sender lock's key (hashtextextended of it, 0): a REDCap push takes it
    too, for its transaction, to put states back to pending with no batch of theirs in flight."""
    return f"redcap-sender:{connection_id}"


@asynccontextmanager
async def sender_lock(db: AsyncSession, connection_id: uuid.UUID) -> AsyncIterator[None]:
    """The connection's one sender: its advisory lock, waited for, held on a connection of its
    own in autocommit (no transaction stays open), given back at the end. Bound to a connection
    (the test harness), on that one."""
    key = {"key": sender_key(connection_id)}
    bind = db.bind
    if not isinstance(bind, AsyncEngine):
        assert bind is not None
        await bind.execute(_LOCK, key)
        try:
            yield
        finally:
            await bind.execute(_UNLOCK, key)
        return
    async with bind.connect() as connection:
        holder = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await holder.execute(_LOCK, key)
        try:
            yield
        finally:
            await holder.execute(_UNLOCK, key)


async def _status_of(
    db: AsyncSession, submission_id: uuid.UUID
) -> tuple[SyncStatus | None, str | None]:
    async with own_transaction(db) as session:
        row = (
            await session.execute(
                select(RedcapSyncState.status, RedcapSyncState.error).where(
                    RedcapSyncState.submission_id == submission_id
                )
            )
        ).one_or_none()
    return (row[0], row[1]) if row is not None else (None, None)


async def _pick(
    db: AsyncSession, plan: Plan, leaving_out: Collection[uuid.UUID]
) -> tuple[list[Item], bool]:
    async with own_transaction(db) as session:
        return await next_batch(session, plan, utcnow(), leaving_out)


async def _write_batch(
    db: AsyncSession,
    plan: Plan,
    items: list[Item],
    results: importing.Results,
    deferred: list[Item],
    own: uuid.UUID,
) -> None:
    async with own_transaction(db) as session:
        await importing.write_results(
            session,
            results,
            still_pending=[i.submission_id for i in deferred],
            pending_error=importing.DEFERRED,
            own=own,
        )
    importing.log_batch(plan, len(items), results, deferred)


async def _soon(coro: Awaitable[T], overlap: bool) -> asyncio.Future[T]:
    """The coroutine running beside the caller (overlap), or run to its end first: a session
    bound to one connection (the test harness) cannot run two statements at once."""
    if overlap:
        return asyncio.ensure_future(coro)
    done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    done.set_result(await coro)
    return done


async def _shape_known(shaping: asyncio.Future[Any] | None) -> None:
    """The shape asked for beside the first pick, waited for: its transient failure is the
    batch's (it waits, as for its import); REDCap's refusal is left to the batch's own check,
    which reports it as the batch's failure."""
    if shaping is not None:
        with suppress(RedcapRejected):
            await shaping


async def _send_batches(
    db: AsyncSession,
    client: RedcapClient,
    settings: Settings,
    plan: Plan,
    submission_id: uuid.UUID,
    backlog_seconds: float,
) -> importing.Results:
    """The loop (module docstring), under the connection's lock: the next batch is picked
    while this one is with REDCap, and this one's outcome written while the next one is, one
    import call at a time. A batch picked and never sent stays pending with its instances,
    for the next sender."""
    totals = importing.Results()
    started = time.monotonic()
    overlap = isinstance(db.bind, AsyncEngine)
    # Settled while this task waited for the lock: only the backlog's time is left.
    own_sent = (await _status_of(db, submission_id))[0] in SETTLED
    ahead: asyncio.Future[tuple[list[Item], bool]] | None = await _soon(
        _pick(db, plan, ()), overlap
    )
    # The project's shape (server.redcap.shape), if not kept, is asked for while the first
    # batch is picked, not after it: three calls' wait before the first import otherwise.
    # Not for a task whose submission was sent already (it most often finds nothing to send).
    # Started once the pick is under way, so that nothing is left running if the pick fails.
    shaping: asyncio.Future[Any] | None = None
    if not own_sent:
        shaping = asyncio.ensure_future(
            shape.fetch(client, plan.connection_id, plan.mapping_version)
        )
    writing: asyncio.Future[None] | None = None
    writing_ids: set[uuid.UUID] = set()
    try:
        while ahead is not None:
            items, full = await ahead
            ahead = None
            if not items:
                break
            ids = {i.submission_id for i in items}
            own_sent = own_sent or submission_id in ids
            more = not own_sent or time.monotonic() - started < backlog_seconds
            if full and more:
                ahead = await _soon(_pick(db, plan, ids | writing_ids), overlap)
            results = importing.Results()
            try:
                await _shape_known(shaping)
                shaping = None
                deferred = await importing.send(client, settings, plan, items, results)
            except TransientRedcapError as exc:
                if writing is not None:
                    await writing
                writing = None
                await importing.write_transient(db, plan, items, results, exc, submission_id)
                if (await _status_of(db, submission_id))[0] not in SETTLED:
                    raise
                break
            if writing is not None:
                await writing
            writing = await _soon(
                _write_batch(db, plan, items, results, deferred, submission_id), overlap
            )
            writing_ids = ids
            totals.batches += 1
            totals.synced += results.synced
            totals.failed |= results.failed
            totals.calls += results.calls
            totals.first_batch = totals.first_batch or len(items)
        if writing is not None:
            await writing
    finally:
        # Whatever stopped the loop, nothing is left running behind it.
        for pending in (shaping, ahead, writing):
            if pending is not None and not pending.done():
                await asyncio.wait([pending])
        if shaping is not None and not shaping.cancelled():
            shaping.exception()  # retrieved: the batch it was for was never sent
    return totals


async def sync_submission(
    db: AsyncSession,
    settings: Settings,
    submission_id: uuid.UUID,
    *,
    backlog_seconds: float = 0.0,
) -> SyncOutcome:
    """Send this submission (and its connection's other pending ones, in order) to REDCap."""
    async with own_transaction(db) as session:
        start = await routing.route(session, settings, submission_id)
    if start.outcome is not None:
        routing.expire_states(db, {submission_id})
        return start.outcome
    plan, client = start.plan, start.client
    assert plan is not None and client is not None
    async with sender_lock(db, plan.connection_id):
        async with own_transaction(db) as session:
            plan = await routing.current_plan(session, plan)
        totals = await _send_batches(db, client, settings, plan, submission_id, backlog_seconds)
    routing.expire_states(db, {submission_id, *totals.synced, *totals.failed})
    status, error = await _status_of(db, submission_id)
    return SyncOutcome(
        submission_id,
        str(status) if status is not None else "pending",
        connection_id=plan.connection_id,
        batch=totals.first_batch,
        synced=len(totals.synced),
        failed=len(totals.failed),
        calls=totals.calls,
        error=error,
        backlog_batches=max(0, totals.batches - 1),
    )
