"""A REDCap push: a filtered set of sessions sent through the study's REDCap mapping again, as
one job (after a mapping change, say), with the sync's per-record results.

- Asked for (`create`): the export's filters (a site-scoped member's sites filled in), a row
  and its one outbox row (topic exports.redcap_push), in the request's transaction.
- The job, step 1 (`choose`), once: the export's selection (accepted, never quarantined,
  consent allowing) written to redcap_push_submissions, and those submissions' sync states put
  back to pending under the connection they route to now (the participant's site's, else the
  study-wide one), whatever they were (synced, failed, skipped, or none yet). Record id, event,
  instrument and instance are kept: the batch (server.redcap.batch) sends the same instance
  again, an update in REDCap, never a second instance. No connection at all: skipped. Written
  with chosen_at in one transaction: a redelivered job never chooses or resets again.
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
from server.exports import query
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

NO_CONNECTION = "No REDCap connection for this study or this participant's site."
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


_SENDER_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
# The connection each chosen submission routes to now (server.redcap.service.connection_for):
# its participant's site's, else the study-wide one.
_RESET = text("""
    INSERT INTO redcap_sync_states
        (submission_id, study_id, connection_id, status, attempts, error, created_at)
    SELECT x.submission_id, x.study_id, x.connection_id,
           CASE WHEN x.connection_id IS NULL THEN 'skipped' ELSE 'pending' END, 0,
           CASE WHEN x.connection_id IS NULL THEN CAST(:no_connection AS text) END, :now
    FROM (
        SELECT ps.submission_id, s.study_id, COALESCE(
            (SELECT c.id FROM redcap_connections c
             WHERE c.study_id = s.study_id AND c.site_id = p.site_id),
            (SELECT c.id FROM redcap_connections c
             WHERE c.study_id = s.study_id AND c.site_id IS NULL)) AS connection_id
        FROM redcap_push_submissions ps
        JOIN submissions s ON s.id = ps.submission_id
        JOIN participants p ON p.id = s.participant_id
        WHERE ps.push_id = :push_id
    ) x
    ON CONFLICT (submission_id) DO UPDATE SET
        status = EXCLUDED.status, connection_id = EXCLUDED.connection_id,
        error = EXCLUDED.error, error_field = NULL, last_attempt_at = NULL
""")


async def choose(session: AsyncSession, push_id: uuid.UUID) -> RedcapPush:
    """Step 1 (module docstring), in the caller's transaction; nothing if done before."""
    push = await session.get(RedcapPush, push_id, with_for_update=True, populate_existing=True)
    if push is None:
        raise PushGone(str(push_id))
    if push.chosen_at is not None:
        return push
    # Every sender of the study's connections, for this transaction, before any state is
    # touched (a sender writing its outcome waits for nothing this holds): a batch in flight
    # when the mapping changed is answered and written first, then put back to pending here,
    # never settled after this reset under the mapping it was sent with.
    connections = await session.scalars(
        select(RedcapConnection.id)
        .where(RedcapConnection.study_id == push.study_id)
        .order_by(RedcapConnection.id)
    )
    for connection_id in connections.all():
        await session.execute(_SENDER_LOCK, {"key": sync.sender_key(connection_id)})
    chosen, params = query.chosen_sql(push.study_id, push.filters)
    result = await session.execute(
        text(f"""
            INSERT INTO redcap_push_submissions (push_id, submission_id)
            SELECT :push_id, c.submission_id FROM ({chosen}) c
        """),  # noqa: S608 (fixed fragments and bound parameters: server.exports.query)
        {**params, "push_id": push.id},
    )
    await session.execute(
        _RESET, {"push_id": push.id, "no_connection": NO_CONNECTION, "now": utcnow()}
    )
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
        if first is not None and now_left >= left:
            # REDCap deferred every row (sync.importing.MAX_ROUNDS): not for ever in one run.
            raise TransientRedcapError(STALLED)
        left = now_left
    return True


async def finish(session: AsyncSession, push_id: uuid.UUID) -> None:
    push = await session.get(RedcapPush, push_id, with_for_update=True)
    if push is not None and push.finished_at is None:
        push.finished_at = utcnow()
        await session.flush()
