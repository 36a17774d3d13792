"""Submissions into REDCap: batched, throttled, and never a second record or repeat instance.

`sync_submission(db, settings, submission_id)` is the worker's entry point (outbox topic
`redcap.sync_submission`). What it guarantees:

- Idempotent: a submission already synced returns without a call to REDCap (so does a failed
  one: `resync` puts it back in the queue).
- Routing: the participant's site connection if there is one, else the study-wide one. No
  connection, a disabled one, or no mapping: the state is `skipped`, with the reason.
- Batches: this submission, plus other pending ones of the same connection (oldest first,
  up to the connection's batch_size; submissions still queued for sync get their pending state
  here), go to REDCap in one import_records call (chunked by REDCAP_IMPORT_CHUNK_ROWS/BYTES).
- The claim (server.redcap.claim) comes first, in a short transaction of its own committed
  before any call: the batch's states get their record id, event, instrument and repeat
  instance (max of this connection's states for that record and instrument, + 1, in received
  order) and are marked claimed (pending, no error, last_attempt_at now). A crash after
  REDCap took the rows re-sends the same instances: an update in REDCap, never a second
  record or instance. A claim older
  than REDCAP_SYNC_LEASE_SECONDS is taken over. A younger one, held by another worker, makes
  this call raise TransientRedcapError (the task retries later and finds the work done); with
  backlog_seconds, it first sends the connection's next batches alongside that worker (see
  Backlog), and returns the outcome if that worker's batch settled this submission meanwhile.
- Shape: before a batch is sent, the project is checked against the mapping
  (server.redcap.shape); a project changed since the mapping was saved fails the batch's
  submissions with the mapping error, and nothing is sent.
- Throttle: every call waits for a slot of its REDCap server's budget (server.redcap.throttle).
- Transient failures (unreachable, timeout, HTTP 5xx): the attempt and error are written on
  the states, which stay pending, committed at once; then TransientRedcapError.
- REDCap's rejections: its message says which rows (record, field, value) it refused; those
  submissions are failed with REDCap's message and the field, and the others are imported
  again in a new call. One bad value never holds back the rest.
- The outcome (synced / failed) is written through `db`, for the caller to commit, and with
  it the sync outbox rows of the other submissions the batch settled are completed (their Jobs
  succeeded): their tasks stop at their first step, and the relay does not publish those it
  has not reached yet. A backlog of N submissions is then a few batches, not N tasks.
- Backlog (backlog_seconds; the worker's task passes BACKLOG_SECONDS): a batch that came back
  full is followed by the connection's next ones (claim_next), each claimed while the one
  before is with REDCap and its outcome committed on its own (so is this batch's, then),
  until one is not full or the time is up. A transient failure ends the backlog (that batch
  waits, unclaimed, with the error) without failing this submission's sync, which is done.

Routing and the claim run in a session of their own on `db.bind` (`own_transaction`), and
`db` is not touched before they commit: the claim commits whatever the caller then does with
its transaction (the worker runs the task inside `db.begin()`, where `db.commit()` cannot be
called, and rolls back on an error). In the test harness, where `db.bind` is the test's
connection, that session works on a savepoint of it, as the app's own sessions do in tests;
it is a savepoint of its own (not nested in one of `db`'s) when the test has committed its
set-up first.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import timedelta

import orjson
import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from server.core.config import Settings
from server.core.crypto import SecretUnreadable
from server.core.db import one_of
from server.core.errors import Conflict, NotFound
from server.core.models import utcnow
from server.outbox import service as outbox
from server.participants.models import Participant
from server.redcap import service, shape
from server.redcap.claim import (
    NOTHING_TO_SEND,
    Claim,
    Item,
    Plan,
    build_items,
    claim_batch,
    claim_next,
    own_transaction,
)
from server.redcap.client import RedcapClient, client_for
from server.redcap.errors import RedcapRejected, TransientRedcapError
from server.redcap.models import RedcapMapping, RedcapSyncState, SyncStatus
from server.redcap.rejections import blame_rows
from server.submissions.models import Submission

log = structlog.get_logger(__name__)

# Rounds of "import, drop what REDCap refused, import the rest" before the rest waits.
MAX_ROUNDS = 5
# How long the worker's task goes on with its connection's backlog after a full batch
# (sync_submission's backlog_seconds); well inside the task's soft time limit (300 s).
BACKLOG_SECONDS = 60.0
DEFERRED = "Deferred: REDCap kept refusing rows of this batch; sent again with the next sync."


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
    backlog_synced: int = 0


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
        # Still pending, and no longer claimed (the error says why it waits).
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


async def _renew(db: AsyncSession, submission_ids: list[uuid.UUID]) -> None:
    async with own_transaction(db) as session:
        await session.execute(
            update(RedcapSyncState)
            .where(
                one_of(RedcapSyncState.submission_id, submission_ids),
                RedcapSyncState.status == SyncStatus.pending,
                RedcapSyncState.error.is_(None),
            )
            .values(last_attempt_at=utcnow())
            .execution_options(synchronize_session=False)
        )


async def _send(
    db: AsyncSession,
    client: RedcapClient,
    settings: Settings,
    plan: Plan,
    items: list[Item],
    results: _Results,
    claimed_at: float,
) -> list[Item]:
    """Import until everything is synced or failed; what is left after MAX_ROUNDS.
    `claimed_at`: when the items were claimed (time.monotonic())."""
    record_id_field = plan.document["record_id_field"]
    if await _misfit(client, plan, items, results):
        return []
    remaining = items
    for _round in range(MAX_ROUNDS):
        if not remaining:
            break
        again: list[Item] = []
        for chunk in _chunks(remaining, settings):
            if time.monotonic() - claimed_at > plan.lease.total_seconds() / 2:
                # A long batch (throttled, or chunked): keep the claim from running out.
                done = set(results.synced) | set(results.failed)
                await _renew(db, [i.submission_id for i in items if i.submission_id not in done])
                claimed_at = time.monotonic()
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
    error: str,
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
    """What the claim transaction decided: an outcome already, or a claimed batch to send."""

    outcome: SyncOutcome | None = None
    plan: Plan | None = None
    client: RedcapClient | None = None
    claim: Claim | None = None


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
    plan = Plan(
        connection_id=connection.id,
        study_id=study_id,
        site_id=connection.site_id,
        batch_size=max(1, connection.batch_size),
        document=dict(mapping.document),
        lease=timedelta(seconds=settings.REDCAP_SYNC_LEASE_SECONDS),
        mapping_version=f"{mapping.validated_at.isoformat()}/{connection.updated_at.isoformat()}",
    )
    claimed = await claim_batch(session, plan, submission_id, utcnow())
    return _Start(plan=plan, client=client, claim=claimed)


# ----- the backlog ------------------------------------------------------------------------------
async def _claim_next(db: AsyncSession, plan: Plan) -> Claim:
    async with own_transaction(db) as session:
        claim = await claim_next(session, plan, utcnow())
    return await _built(db, plan, claim)


async def _built(db: AsyncSession, plan: Plan, claim: Claim) -> Claim:
    """The claim with its rows, built once its turn is over (build_items) if it has none. If
    that fails, the claim (committed) is let go of before the error goes on."""
    if claim.numbered and not claim.items:
        try:
            async with own_transaction(db) as session:
                await build_items(session, plan, claim)
        except Exception:
            await _release(db, claim.submission_ids, DEFERRED)
            raise
    return claim


def _claim_ahead(db: AsyncSession, plan: Plan) -> asyncio.Task[Claim]:
    """The connection's next batch, claimed while the one before is with REDCap: the database's
    part of a batch overlaps REDCap's part of the previous one (one import call at a time)."""
    return asyncio.create_task(_claim_next(db, plan))


async def _let_go(db: AsyncSession, ahead: asyncio.Task[Claim] | None, error: str) -> None:
    """A batch claimed ahead that is not sent after all: pending again and unclaimed (the
    error says why it waits). Not cancelled: a claim that has committed would be lost with
    it, held until its lease ran out; it is short, so it is waited for."""
    if ahead is None:
        return
    await asyncio.wait([ahead])
    if not ahead.cancelled() and ahead.exception() is None:
        await _release(db, ahead.result().submission_ids, error)


async def _release(db: AsyncSession, submission_ids: list[uuid.UUID], error: str) -> None:
    """These claimed states pending again and unclaimed at once (the error says why)."""
    if not submission_ids:
        return
    with suppress(Exception):  # else their claim runs out with the lease
        async with own_transaction(db) as session:
            await _write_results(
                session, _Results(), still_pending=submission_ids, pending_error=error
            )


async def _write_transient(
    db: AsyncSession,
    plan: Plan,
    items: list[Item],
    results: _Results,
    exc: TransientRedcapError,
    own: uuid.UUID | None = None,
    **context: object,
) -> None:
    """What a batch cut short by a transient failure got done, committed at once; the rest
    stays pending with the error (and so unclaimed)."""
    done = set(results.synced) | set(results.failed)
    waiting = [i.submission_id for i in items if i.submission_id not in done]
    async with own_transaction(db) as session:
        await _write_results(
            session, results, still_pending=waiting, pending_error=exc.message, own=own
        )
    _expire(db, {i.submission_id for i in items})
    log.warning(
        "redcap_sync_transient",
        connection_id=str(plan.connection_id),
        batch=len(items),
        synced=len(results.synced),
        waiting=len(waiting),
        error=exc.message,
        **context,
    )


async def _commit_batch(
    db: AsyncSession,
    plan: Plan,
    items: list[Item],
    results: _Results,
    deferred: list[Item],
    *,
    own: uuid.UUID | None = None,
    backlog: bool = False,
) -> None:
    """A sent batch's outcome, committed on its own."""
    async with own_transaction(db) as session:
        await _write_results(
            session,
            results,
            still_pending=[i.submission_id for i in deferred],
            pending_error=DEFERRED,
            own=own,
        )
    _expire(db, {i.submission_id for i in items})
    _log_batch(plan, len(items), results, deferred, backlog=backlog)


def _log_batch(
    plan: Plan, size: int, results: _Results, deferred: list[Item], *, backlog: bool
) -> None:
    log.info(
        "redcap_sync_batch",
        connection_id=str(plan.connection_id),
        batch=size,
        synced=len(results.synced),
        failed=len(results.failed),
        deferred=len(deferred),
        calls=results.calls,
        backlog=backlog,
    )


async def _settle(writing: asyncio.Task[None] | None) -> None:
    if writing is not None:
        await writing


async def _send_backlog(
    db: AsyncSession,
    client: RedcapClient,
    settings: Settings,
    plan: Plan,
    deadline: float,
    ahead: asyncio.Task[Claim],
    writing: asyncio.Task[None] | None = None,
) -> _Results:
    """The connection's next batches, one after the other (the first already being claimed),
    while they come back full and until `deadline` (time.monotonic()). Each batch is claimed
    while the one before is with REDCap, and its outcome committed while the one after is:
    the database's work overlaps REDCap's, one import call at a time, and at most one claim
    and one outcome in flight (`writing`: the one before this backlog's first batch, if any).
    A transient failure stops it without raising: that batch waits, unclaimed, with the
    error. A failed write raises: its batch stays claimed, sent again when the claim lapses,
    under the same instances."""
    totals = _Results()
    upcoming: asyncio.Task[Claim] | None = ahead
    try:
        while upcoming is not None:
            claim = await upcoming
            upcoming = None
            if not claim.items:
                break
            if claim.full and time.monotonic() < deadline:
                upcoming = _claim_ahead(db, plan)
            results = _Results()
            try:
                deferred = await _send(
                    db, client, settings, plan, claim.items, results, claim.claimed_at
                )
            except TransientRedcapError as exc:
                await _settle(writing)
                writing = None
                await _write_transient(db, plan, claim.items, results, exc, backlog=True)
                await _let_go(db, upcoming, exc.message)
                upcoming = None
            else:
                await _settle(writing)
                writing = asyncio.create_task(
                    _commit_batch(db, plan, claim.items, results, deferred, backlog=True)
                )
            totals.synced += results.synced
            totals.failed |= results.failed
            totals.calls += results.calls
            totals.batches += 1
        await _settle(writing)
    except BaseException:
        await _let_go(db, upcoming, DEFERRED)
        if writing is not None and not writing.done():
            with suppress(BaseException):
                await writing  # its batch was sent: its outcome is worth the wait
        raise
    return totals


async def sync_submission(
    db: AsyncSession,
    settings: Settings,
    submission_id: uuid.UUID,
    *,
    backlog_seconds: float = 0.0,
) -> SyncOutcome:
    """Send this submission (and its connection's other pending ones) to REDCap.

    With backlog_seconds (the worker's task), a batch that came back full is followed by the
    connection's next batches for up to that long: a backlog goes out at REDCap's pace, not at
    the pace of the queue reaching a submission outside the batches sent so far (each of the
    others' tasks finds its submission synced). This batch's outcome then commits at once,
    before the next batches, so its rows are not held by the caller's transaction meanwhile.
    """
    # Routing and the claim: committed on their own before any call to REDCap.
    async with own_transaction(db) as session:
        start = await _start(session, settings, submission_id)
    if start.outcome is not None:
        _expire(db, {submission_id})
        return start.outcome
    plan, client, claim = start.plan, start.client, start.claim
    assert plan is not None and client is not None and claim is not None
    claim = await _built(db, plan, claim)
    # The backlog's claims run beside the import calls, each on a connection of its own: with
    # `db` bound to one connection (the test harness), there is no backlog.
    backlog = backlog_seconds > 0 and isinstance(db.bind, AsyncEngine)
    deadline = time.monotonic() + backlog_seconds
    if claim.held_elsewhere_s is not None:
        return await _alongside(db, client, settings, plan, submission_id, claim, backlog, deadline)
    batch = {i.submission_id for i in claim.items}
    _expire(db, batch | {submission_id})
    if not claim.items:
        return SyncOutcome(
            submission_id,
            str(claim.own_status),
            connection_id=plan.connection_id,
            error=claim.own_error,
        )

    ahead = _claim_ahead(db, plan) if backlog and claim.full else None
    results = _Results()
    try:
        deferred = await _send(db, client, settings, plan, claim.items, results, claim.claimed_at)
    except TransientRedcapError as exc:
        # The caller rolls its transaction back on this error: the attempt commits on its own.
        await _write_transient(db, plan, claim.items, results, exc, own=submission_id)
        await _let_go(db, ahead, exc.message)
        raise
    except BaseException:
        await _let_go(db, ahead, DEFERRED)
        raise
    if ahead is not None:
        # This batch's outcome commits while the backlog's first batch is with REDCap.
        writing = asyncio.create_task(
            _commit_batch(db, plan, claim.items, results, deferred, own=submission_id)
        )
        more = await _send_backlog(db, client, settings, plan, deadline, ahead, writing)
    else:
        waiting = [i.submission_id for i in deferred]
        await _write_results(
            db, results, still_pending=waiting, pending_error=DEFERRED, own=submission_id
        )
        _expire(db, batch)
        _log_batch(plan, len(batch), results, deferred, backlog=False)
        more = _Results()
    if submission_id in results.failed:
        status, error = "failed", results.failed[submission_id][0]
    elif submission_id in results.synced:
        status, error = "synced", None
    elif submission_id in batch:
        status, error = "pending", DEFERRED
    else:
        status, error = str(SyncStatus.skipped), NOTHING_TO_SEND
    return SyncOutcome(
        submission_id,
        status,
        connection_id=plan.connection_id,
        batch=len(batch),
        synced=len(results.synced),
        failed=len(results.failed),
        calls=results.calls + more.calls,
        error=error,
        backlog_batches=more.batches,
        backlog_synced=len(more.synced),
    )


async def _alongside(
    db: AsyncSession,
    client: RedcapClient,
    settings: Settings,
    plan: Plan,
    submission_id: uuid.UUID,
    claim: Claim,
    backlog: bool,
    deadline: float,
) -> SyncOutcome:
    """This submission is in another worker's batch. With a backlog to drain, send its next
    batches alongside (a second chain of imports: REDCap's answer time overlaps, and a backlog
    drains at the pace of two); then this submission's outcome if that batch has settled it,
    else TransientRedcapError (the task retries, and finds it done)."""
    more = _Results()
    if backlog:
        more = await _send_backlog(db, client, settings, plan, deadline, _claim_ahead(db, plan))
        async with own_transaction(db) as session:
            status = await session.scalar(
                select(RedcapSyncState.status).where(RedcapSyncState.submission_id == submission_id)
            )
        if status in (SyncStatus.synced, SyncStatus.failed):
            _expire(db, {submission_id})
            return SyncOutcome(
                submission_id,
                str(status),
                connection_id=plan.connection_id,
                calls=more.calls,
                backlog_batches=more.batches,
                backlog_synced=len(more.synced),
            )
    raise TransientRedcapError(
        "This submission is in a batch another worker is sending to REDCap.",
        retry_after=claim.held_elsewhere_s,
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
