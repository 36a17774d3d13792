"""A REDCap push: a filtered set of sessions sent through the study's REDCap mapping again, as
one job (after a mapping change, say), with the sync's per-record results.

- Asked for (`create`): the export's filters (a site-scoped member's sites filled in), a row
  and its one outbox row (topic exports.redcap_push), in the request's transaction.
- The job, step 1 (`choose`), once: the export's selection (accepted, never quarantined,
  consent allowing) written to redcap_push_submissions, and those submissions' sync states put
  back to pending under the connection they route to now (the participant's site's, else the
  study-wide one), whatever they were (synced, failed, skipped, or none yet), with every sender
  of the study held off (server.exports.push_states). Record id, event, instrument and
  instance are kept: the batch (server.redcap.batch) sends the same instance again, an update
  in REDCap, never a second instance (through another connection than before, another
  project: numbered afresh there). No connection at all: skipped. Written with chosen_at in
  one transaction: a redelivered job never chooses or resets again.
- Step 2 (`drive`): the connections' own sender (server.redcap.sync.sync_submission), for the
  push's oldest unsettled submission, until none is left: its advisory lock per connection,
  throttle, shape check and REDCap's refusals per row are the sync's. No transaction is open
  while REDCap is called (the sender opens and closes its own).

The ordinary sync's tasks and a push share the sender's lock and the states: whichever sender
picks a pending state first sends it, numbered under the lock, and the other finds it settled.
A worker killed mid-push: the job comes back (server.outbox.liveness), finds the set chosen,
and goes on; a batch picked but not answered is sent again under the same instances.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.core.errors import Conflict
from server.core.models import utcnow
from server.exports import push_states, query
from server.exports.models import RedcapPush, RedcapPushSubmission
from server.exports.schemas import ExportFilters
from server.exports.service import effective_filters
from server.outbox import service as outbox
from server.redcap import sync
from server.redcap.batch import own_transaction
from server.redcap.errors import TransientRedcapError
from server.redcap.models import RedcapConnection, RedcapSyncState, SyncStatus
from server.studies.access import StudyAccess
from server.submissions.models import Submission, SubmissionStatus

NO_CONNECTION = push_states.NO_CONNECTION
STALLED = "REDCap settled none of this push's records in a round; tried again later."


class PushGone(LookupError):
    """The push was deleted (its study, say) before its job ran."""


async def create(
    db: AsyncSession, *, access: StudyAccess, user_id: uuid.UUID, request: ExportFilters
) -> RedcapPush:
    has_connection = await db.scalar(
        select(func.count()).where(RedcapConnection.study_id == access.study.id)
    )
    if not has_connection:
        raise Conflict("This study has no REDCap connection.", error_code="redcap_not_connected")
    push = RedcapPush(
        id=uuid.uuid4(),
        study_id=access.study.id,
        requested_by=user_id,
        filters=await effective_filters(db, access, request),
    )
    db.add(push)
    await db.flush()
    push.job_id = uuid.uuid4()
    await outbox.add(
        db,
        [
            outbox.Event(
                outbox.EXPORT_REDCAP_PUSH,
                {"push_id": str(push.id)},
                subject_id=push.id,
                study_id=push.study_id,
                id=push.job_id,
            )
        ],
    )
    await db.flush()
    return push


async def choose(session: AsyncSession, push_id: uuid.UUID) -> RedcapPush:
    """Step 1 (module docstring), in the caller's transaction; nothing if done before."""
    push = await session.get(RedcapPush, push_id, with_for_update=True, populate_existing=True)
    if push is None:
        raise PushGone(str(push_id))
    if push.chosen_at is not None:
        return push
    await push_states.hold_senders(session, push.study_id)
    chosen, params = query.chosen_sql(push.study_id, push.filters)
    result = await session.execute(
        text(f"""
            INSERT INTO redcap_push_submissions (push_id, submission_id)
            SELECT :push_id, c.submission_id FROM ({chosen}) c
        """),  # noqa: S608 (fixed fragments and bound parameters: server.exports.query)
        {**params, "push_id": push.id},
    )
    await push_states.reset(session, push.id, utcnow())
    push.total = int(result.rowcount)  # type: ignore[attr-defined]
    push.excluded = await query.excluded_by_consent(session, push.study_id, push.filters)
    push.chosen_at = utcnow()
    await session.flush()
    return push


def _unsettled(push_id: uuid.UUID) -> Any:
    """The push's submissions still waiting to be sent, oldest first (a submission
    quarantined since it was chosen is held back, as the sync holds it)."""
    return (
        select(RedcapSyncState.submission_id)
        .join(
            RedcapPushSubmission,
            RedcapPushSubmission.submission_id == RedcapSyncState.submission_id,
        )
        .join(Submission, Submission.id == RedcapSyncState.submission_id)
        .where(
            RedcapPushSubmission.push_id == push_id,
            RedcapSyncState.status == SyncStatus.pending,
            Submission.status == SubmissionStatus.accepted,
        )
        .order_by(Submission.received_at, Submission.id)
    )


async def _waiting(db: AsyncSession, push_id: uuid.UUID) -> tuple[uuid.UUID | None, int]:
    async with own_transaction(db) as session:
        first = await session.scalar(_unsettled(push_id).limit(1))
        left = await session.scalar(
            select(func.count()).select_from(_unsettled(push_id).subquery())
        )
    return first, int(left or 0)


async def _rerouted(db: AsyncSession, push_id: uuid.UUID) -> bool:
    """Whether states of the push waited under a connection they no longer route to (moved
    to their route now: the next round sends them)."""
    async with own_transaction(db) as session:
        study_id = await session.scalar(select(RedcapPush.study_id).where(RedcapPush.id == push_id))
        if study_id is None:
            return False
        await push_states.hold_senders(session, study_id)
        return await push_states.reroute(session, push_id) > 0


async def drive(
    db: AsyncSession, settings: Settings, push_id: uuid.UUID, *, budget_s: float
) -> bool:
    """Step 2 (module docstring) for up to about budget_s seconds: True once every submission
    of the push is settled, False with some left (the job goes on in its next run). `db` is
    only the source of connections: nothing runs in a transaction of its own here."""
    started = time.monotonic()
    first, left = await _waiting(db, push_id)
    while first is not None:
        remaining = budget_s - (time.monotonic() - started)
        if remaining <= 0:
            return False
        # The sender goes on with the connection's full batches (the push's, oldest first)
        # for as long as the budget allows, then hands back its lock.
        await sync.sync_submission(
            db, settings, first, backlog_seconds=min(sync.BACKLOG_SECONDS, remaining)
        )
        first, now_left = await _waiting(db, push_id)
        if first is not None and now_left >= left and not await _rerouted(db, push_id):
            # REDCap deferred every row (sync.importing.MAX_ROUNDS): not for ever in one run.
            raise TransientRedcapError(STALLED)
        left = now_left
    return True


async def finish(session: AsyncSession, push_id: uuid.UUID) -> None:
    """Finished: each record's result as the sync left it, kept on the push (a later sync
    or push of the same submission changes its state, not this push's results)."""
    push = await session.get(RedcapPush, push_id, with_for_update=True)
    if push is not None and push.finished_at is None:
        await session.execute(
            text("""
                UPDATE redcap_push_submissions ps SET
                    status = s.status, record_id = s.record_id, event = s.event,
                    instrument = s.instrument, instance = s.instance, attempts = s.attempts,
                    error = s.error, error_field = s.error_field,
                    last_attempt_at = s.last_attempt_at, synced_at = s.synced_at
                FROM redcap_sync_states s
                WHERE ps.push_id = :push_id AND s.submission_id = ps.submission_id
            """),
            {"push_id": push_id},
        )
        push.finished_at = utcnow()
        await session.flush()
