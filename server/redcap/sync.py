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
from collections.abc import AsyncIterator, Awaitable, Collection, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import orjson
import structlog
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from server.core.config import Settings
from server.core.crypto import SecretUnreadable
from server.core.db import one_of
from server.core.errors import Conflict, NotFound
from server.core.models import utcnow
from server.outbox import service as outbox
from server.participants.models import Participant
from server.redcap import service, shape
from server.redcap.batch import Item, Plan, next_batch, own_transaction
from server.redcap.client import RedcapClient, client_for
from server.redcap.errors import RedcapRejected, TransientRedcapError
from server.redcap.models import RedcapMapping, RedcapSyncState, SyncStatus
from server.redcap.rejections import blame_rows
from server.submissions.models import Submission

log = structlog.get_logger(__name__)
T = TypeVar("T")

# Rounds of "import, drop what REDCap refused, import the rest" before the rest waits.
MAX_ROUNDS = 5
# How long a sender goes on with its connection's backlog once its own submission is settled.
BACKLOG_SECONDS = 60.0
DEFERRED = "Deferred: REDCap kept refusing rows of this batch; sent again with the next sync."
SETTLED = (SyncStatus.synced, SyncStatus.failed, SyncStatus.skipped)
_LOCK = text("SELECT pg_advisory_lock(hashtextextended(:key, 0))")
_UNLOCK = text("SELECT pg_advisory_unlock(hashtextextended(:key, 0))")


@dataclass
class SyncOutcome:
    submission_id: uuid.UUID
    # synced | failed | skipped | pending (deferred) | missing (the submission is gone)
    status: str
    connection_id: uuid.UUID | None = None
    batch: int = 0  # submissions in the batch sent (this one included)
    synced: int = 0
    failed: int = 0
    calls: int = 0  # import calls made (the backlog's too)
    error: str | None = None
    backlog_batches: int = 0  # further batches of the connection sent after this one's


def _chunks(items: list[Item], settings: Settings) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    size = 2
    for item in items:
        row_size = len(orjson.dumps(item.row)) + 1
        if chunk and (
            len(chunk) >= settings.REDCAP_IMPORT_CHUNK_ROWS
            or size + row_size > settings.REDCAP_IMPORT_CHUNK_BYTES
        ):
            yield chunk
            chunk, size = [], 2
        chunk.append(item)
        size += row_size
    if chunk:
        yield chunk


@dataclass
class _Results:
    synced: list[uuid.UUID] = field(default_factory=list)
    failed: dict[uuid.UUID, tuple[str, str | None]] = field(default_factory=dict)
    calls: int = 0
    batches: int = 0
    first_batch: int = 0  # the size of the first batch sent


async def _write_results(
    session: AsyncSession,
    results: _Results,
    *,
    still_pending: Sequence[uuid.UUID] = (),
    pending_error: str | None = None,
    own: uuid.UUID | None = None,
) -> None:
    """The batch's outcome on its states, and the sync events of those it settled completed,
    but `own`'s: the task that runs for it completes its own (workers.protocol)."""
    now = utcnow()
    states = update(RedcapSyncState).execution_options(synchronize_session=False)
    if results.synced:
        await session.execute(
            states.where(one_of(RedcapSyncState.submission_id, results.synced)).values(
                status=SyncStatus.synced, synced_at=now, error=None, error_field=None
            )
        )
    for submission_id, (message, error_field) in results.failed.items():
        await session.execute(
            states.where(RedcapSyncState.submission_id == submission_id).values(
                status=SyncStatus.failed,
                error=message,
                error_field=error_field[:100] if error_field else None,
            )
        )
    if still_pending:
        # Still pending (the error says why it waits).
        await session.execute(
            states.where(one_of(RedcapSyncState.submission_id, still_pending)).values(
                status=SyncStatus.pending, error=pending_error or DEFERRED, error_field=None
            )
        )
    # The sync rows of the others this batch settled: their own runs find nothing to do.
    topic = outbox.REDCAP_SYNC_SUBMISSION
    await outbox.settle(session, topic, [i for i in results.synced if i != own], now=now)
    for submission_id, (message, _) in results.failed.items():
        if submission_id != own:
            await outbox.settle(session, topic, [submission_id], now=now, error=message)
    await session.flush()


async def _send(
    client: RedcapClient,
    settings: Settings,
    plan: Plan,
    items: list[Item],
    results: _Results,
) -> list[Item]:
    """Import until everything is synced or failed; what is left after MAX_ROUNDS."""
    record_id_field = plan.document["record_id_field"]
    if await _misfit(client, plan, items, results):
        return []
    remaining = items
    for _round in range(MAX_ROUNDS):
        if not remaining:
            break
        again: list[Item] = []
        for chunk in _chunks(remaining, settings):
            try:
                await client.import_records([i.row for i in chunk])
            except RedcapRejected as exc:
                results.calls += 1
                blamed = blame_rows(exc.redcap_message, [i.row for i in chunk], record_id_field)
                if not blamed:
                    # Nothing in the message points at a row (a missing right, say): all of them.
                    for item in chunk:
                        results.failed[item.submission_id] = (exc.redcap_message, None)
                    continue
                for index, item in enumerate(chunk):
                    if index in blamed:
                        results.failed[item.submission_id] = (
                            blamed[index].message,
                            blamed[index].field,
                        )
                    else:
                        again.append(item)
                log.info(
                    "redcap_rows_refused",
                    connection_id=str(plan.connection_id),
                    refused=len(blamed),
                    again=len(chunk) - len(blamed),
                )
                continue
            results.calls += 1
            results.synced.extend(i.submission_id for i in chunk)
        remaining = again
    return remaining


async def _misfit(client: RedcapClient, plan: Plan, items: list[Item], results: _Results) -> bool:
    """A project whose shape no longer fits the mapping (server.redcap.shape) gets none of the
    batch: each of its submissions fails with the mapping error. True if so."""
    try:
        problem = await shape.misfit(
            client, plan.connection_id, plan.mapping_version, plan.document
        )
    except RedcapRejected as exc:  # a revoked token, say: its import would be refused too
        problem = exc.redcap_message
    if problem is None:
        return False
    for item in items:
        results.failed[item.submission_id] = (problem, None)
    log.warning(
        "redcap_mapping_misfit",
        connection_id=str(plan.connection_id),
        batch=len(items),
        problem=problem,
    )
    return True


def _expire(db: AsyncSession, submission_ids: set[uuid.UUID]) -> None:
    """Whatever the caller's session holds of these states is out of date now."""
    identity_map = db.sync_session.identity_map
    for key in list(identity_map.keys()):
        # By identity key: reading an attribute of an expired object would load it.
        if key[0] is RedcapSyncState and key[1][0] in submission_ids:
            obj = identity_map.get(key)
            if obj is not None:
                db.expire(obj)


async def _set_state(
    session: AsyncSession,
    *,
    submission_id: uuid.UUID,
    study_id: uuid.UUID,
    connection_id: uuid.UUID | None,
    status: SyncStatus,
    error: str | None,
) -> None:
    existing = await session.scalar(
        select(RedcapSyncState.submission_id).where(RedcapSyncState.submission_id == submission_id)
    )
    if existing is None:
        session.add(
            RedcapSyncState(
                submission_id=submission_id,
                study_id=study_id,
                connection_id=connection_id,
                status=status,
                error=error,
            )
        )
    else:
        await session.execute(
            update(RedcapSyncState)
            .where(RedcapSyncState.submission_id == submission_id)
            .values(connection_id=connection_id, status=status, error=error, error_field=None)
            .execution_options(synchronize_session=False)
        )
    await session.flush()


@dataclass
class _Start:
    """What routing decided: an outcome already, or the connection to send through."""

    outcome: SyncOutcome | None = None
    plan: Plan | None = None
    client: RedcapClient | None = None


async def _start(session: AsyncSession, settings: Settings, submission_id: uuid.UUID) -> _Start:
    found = (
        await session.execute(
            select(Submission.study_id, Participant.site_id)
            .join(Participant, Participant.id == Submission.participant_id)
            .where(Submission.id == submission_id)
        )
    ).one_or_none()
    if found is None:
        return _Start(SyncOutcome(submission_id, "missing"))
    study_id, site_id = found
    current = (
        await session.execute(
            select(RedcapSyncState.status, RedcapSyncState.connection_id).where(
                RedcapSyncState.submission_id == submission_id
            )
        )
    ).one_or_none()
    if current is not None and current[0] in (SyncStatus.synced, SyncStatus.failed):
        return _Start(SyncOutcome(submission_id, str(current[0]), connection_id=current[1]))
    skipped_before = current is not None and current[0] == SyncStatus.skipped

    connection = await service.connection_for(session, study_id=study_id, site_id=site_id)
    mapping = await session.get(RedcapMapping, connection.id) if connection is not None else None
    if connection is None or not connection.enabled or mapping is None:
        if connection is None:
            reason = "No REDCap connection for this study or this participant's site."
        elif not connection.enabled:
            reason = "The REDCap connection is disabled."
        else:
            reason = "The REDCap connection has no field mapping."
        connection_id = connection.id if connection is not None else None
        await _set_state(
            session,
            submission_id=submission_id,
            study_id=study_id,
            connection_id=connection_id,
            status=SyncStatus.skipped,
            error=reason,
        )
        return _Start(SyncOutcome(submission_id, "skipped", connection_id, error=reason))
    try:
        client = client_for(connection, settings, interactive=False)
    except (SecretUnreadable, RedcapRejected) as exc:
        # Nothing can be sent until someone enters the token again; then resync.
        await _set_state(
            session,
            submission_id=submission_id,
            study_id=study_id,
            connection_id=connection.id,
            status=SyncStatus.failed,
            error=exc.message,
        )
        return _Start(SyncOutcome(submission_id, "failed", connection.id, error=exc.message))
    if skipped_before:
        # Skipped when it had no way to REDCap; it has one now: pending, sent in its turn.
        await _set_state(
            session,
            submission_id=submission_id,
            study_id=study_id,
            connection_id=connection.id,
            status=SyncStatus.pending,
            error=None,
        )
    plan = Plan(
        connection_id=connection.id,
        study_id=study_id,
        site_id=connection.site_id,
        batch_size=max(1, connection.batch_size),
        document=dict(mapping.document),
        mapping_version=f"{mapping.validated_at.isoformat()}/{connection.updated_at.isoformat()}",
    )
    return _Start(plan=plan, client=client)


# ----- the sender --------------------------------------------------------------------------------
@asynccontextmanager
async def sender_lock(db: AsyncSession, connection_id: uuid.UUID) -> AsyncIterator[None]:
    """The connection's one sender: its advisory lock, waited for, held on a connection of its
    own in autocommit (no transaction stays open), given back at the end. Bound to a connection
    (the test harness), on that one."""
    key = {"key": f"redcap-sender:{connection_id}"}
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


async def _write_transient(
    db: AsyncSession, plan: Plan, items: list[Item], results: _Results, exc: TransientRedcapError,
    own: uuid.UUID,
) -> None:  # fmt: skip
    """What a batch cut short by a transient failure got done; the rest stays pending with
    the error (and its instances)."""
    done = set(results.synced) | set(results.failed)
    waiting = [i.submission_id for i in items if i.submission_id not in done]
    async with own_transaction(db) as session:
        await _write_results(
            session, results, still_pending=waiting, pending_error=exc.message, own=own
        )
    log.warning(
        "redcap_sync_transient",
        connection_id=str(plan.connection_id),
        batch=len(items),
        synced=len(results.synced),
        waiting=len(waiting),
        error=exc.message,
    )


async def _pick(
    db: AsyncSession, plan: Plan, leaving_out: Collection[uuid.UUID]
) -> tuple[list[Item], bool]:
    async with own_transaction(db) as session:
        return await next_batch(session, plan, utcnow(), leaving_out)


async def _write_batch(
    db: AsyncSession,
    plan: Plan,
    items: list[Item],
    results: _Results,
    deferred: list[Item],
    own: uuid.UUID,
) -> None:
    async with own_transaction(db) as session:
        await _write_results(
            session,
            results,
            still_pending=[i.submission_id for i in deferred],
            pending_error=DEFERRED,
            own=own,
        )
    _log_batch(plan, len(items), results, deferred)


async def _soon(coro: Awaitable[T], overlap: bool) -> asyncio.Future[T]:
    """The coroutine running beside the caller (overlap), or run to its end first: a session
    bound to one connection (the test harness) cannot run two statements at once."""
    if overlap:
        return asyncio.ensure_future(coro)
    done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    done.set_result(await coro)
    return done


async def _send_batches(
    db: AsyncSession,
    client: RedcapClient,
    settings: Settings,
    plan: Plan,
    submission_id: uuid.UUID,
    backlog_seconds: float,
) -> _Results:
    """The loop (module docstring), under the connection's lock: the next batch is picked
    while this one is with REDCap, and this one's outcome written while the next one is, one
    import call at a time. A batch picked and never sent stays pending with its instances,
    for the next sender."""
    totals = _Results()
    started = time.monotonic()
    overlap = isinstance(db.bind, AsyncEngine)
    # Settled while this task waited for the lock: only the backlog's time is left.
    own_sent = (await _status_of(db, submission_id))[0] in SETTLED
    ahead: asyncio.Future[tuple[list[Item], bool]] | None = await _soon(
        _pick(db, plan, ()), overlap
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
            results = _Results()
            try:
                deferred = await _send(client, settings, plan, items, results)
            except TransientRedcapError as exc:
                if writing is not None:
                    await writing
                writing = None
                await _write_transient(db, plan, items, results, exc, submission_id)
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
        for pending in (ahead, writing):
            if pending is not None and not pending.done():
                await asyncio.wait([pending])
    return totals


def _log_batch(plan: Plan, size: int, results: _Results, deferred: list[Item]) -> None:
    log.info(
        "redcap_sync_batch",
        connection_id=str(plan.connection_id),
        batch=size,
        synced=len(results.synced),
        failed=len(results.failed),
        deferred=len(deferred),
        calls=results.calls,
    )


async def sync_submission(
    db: AsyncSession,
    settings: Settings,
    submission_id: uuid.UUID,
    *,
    backlog_seconds: float = 0.0,
) -> SyncOutcome:
    """Send this submission (and its connection's other pending ones, in order) to REDCap."""
    async with own_transaction(db) as session:
        start = await _start(session, settings, submission_id)
    if start.outcome is not None:
        _expire(db, {submission_id})
        return start.outcome
    plan, client = start.plan, start.client
    assert plan is not None and client is not None
    async with sender_lock(db, plan.connection_id):
        totals = await _send_batches(db, client, settings, plan, submission_id, backlog_seconds)
    _expire(db, {submission_id, *totals.synced, *totals.failed})
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


# ----- resync ----------------------------------------------------------------------------------
async def resync(
    db: AsyncSession, connection_id: uuid.UUID, submission_id: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """Failed states of a connection back to pending, each with a new outbox row (one
    transaction: the caller's). With a submission id, that one only (404 / 409 otherwise)."""
    statement = (
        update(RedcapSyncState)
        .where(
            RedcapSyncState.connection_id == connection_id,
            RedcapSyncState.status == SyncStatus.failed,
        )
        .values(status=SyncStatus.pending, error=None, error_field=None, last_attempt_at=None)
        .returning(RedcapSyncState.submission_id, RedcapSyncState.study_id)
        .execution_options(synchronize_session=False)
    )
    if submission_id is not None:
        statement = statement.where(RedcapSyncState.submission_id == submission_id)
    rows = (await db.execute(statement)).all()
    reset = [row[0] for row in rows]
    if submission_id is not None and not reset:
        status = await db.scalar(
            select(RedcapSyncState.status).where(
                RedcapSyncState.submission_id == submission_id,
                RedcapSyncState.connection_id == connection_id,
            )
        )
        if status is None:
            raise NotFound("This connection has no sync state for that submission.")
        raise Conflict(
            f"This submission's sync is {status}, not failed.",
            error_code="sync_not_failed",
        )
    await outbox.add(
        db,
        [
            outbox.Event(outbox.REDCAP_SYNC_SUBMISSION, {"submission_id": str(i)}, i, study)
            for i, study in rows
        ],
    )
    _expire(db, set(reset))
    log.info("redcap_resync", connection_id=str(connection_id), reset=len(reset))
    return reset
