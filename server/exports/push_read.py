"""What a REDCap push shows: its job's state, its progress and counts per outcome, and its
records' results, which are the sync's own per-record states (server.redcap): live while it
runs, then as they were when it finished (kept on redcap_push_submissions)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.exports.models import RedcapPush, RedcapPushSubmission
from server.exports.schemas import RedcapPushRead
from server.outbox.models import JobStatus, OutboxEvent
from server.redcap import sync_states
from server.redcap.models import RedcapSyncState, SyncStatus
from server.redcap.schemas import SyncStatePage

SETTLED = (SyncStatus.synced, SyncStatus.failed, SyncStatus.skipped)


def _status(job: OutboxEvent | None) -> str:
    if job is None:
        return "queued"
    if job.status == JobStatus.retrying and job.error is None:
        # Between two runs of a long push (outbox.resume): going on, nothing went wrong.
        return "running"
    return str(job.status)


async def read(db: AsyncSession, push: RedcapPush) -> RedcapPushRead:
    job = await db.get(OutboxEvent, push.job_id) if push.job_id else None
    counts: dict[str, int] = {}
    if push.finished_at is not None:
        kept = await db.execute(
            select(RedcapPushSubmission.status, func.count())
            .where(RedcapPushSubmission.push_id == push.id)
            .group_by(RedcapPushSubmission.status)
        )
        counts = {str(status): int(n) for status, n in kept}
    elif push.chosen_at is not None:
        rows = await db.execute(
            select(RedcapSyncState.status, func.count())
            .join(
                RedcapPushSubmission,
                RedcapPushSubmission.submission_id == RedcapSyncState.submission_id,
            )
            .where(RedcapPushSubmission.push_id == push.id)
            .group_by(RedcapSyncState.status)
        )
        counts = {str(status): int(n) for status, n in rows}
    return RedcapPushRead(
        id=push.id,
        study_id=push.study_id,
        job_id=push.job_id,
        status=_status(job),
        filters=push.filters,
        excluded=push.excluded,
        total=push.total,
        settled=sum(counts.get(s.value, 0) for s in SETTLED),
        counts={s.value: counts.get(s.value, 0) for s in SyncStatus},
        created_at=push.created_at,
        chosen_at=push.chosen_at,
        finished_at=push.finished_at,
        job_error=job.error if job is not None else None,
    )


async def records(
    db: AsyncSession,
    push: RedcapPush,
    *,
    status: SyncStatus | None,
    cursor: uuid.UUID | None,
    limit: int,
) -> SyncStatePage:
    """The push's submissions' sync states, by submission id (the sync-states list's order
    and cursor): each record's id, event, instrument, instance, status and REDCap's error."""
    table: type[RedcapSyncState] | type[RedcapPushSubmission]
    query: Select[Any]
    if push.finished_at is not None:
        table = RedcapPushSubmission
        query = select(RedcapPushSubmission).where(RedcapPushSubmission.push_id == push.id)
    else:
        table = RedcapSyncState
        query = (
            select(RedcapSyncState)
            .join(
                RedcapPushSubmission,
                RedcapPushSubmission.submission_id == RedcapSyncState.submission_id,
            )
            .where(RedcapPushSubmission.push_id == push.id)
        )
    if status is not None:
        query = query.where(table.status == status)
    return await sync_states.page(db, query, table.submission_id, cursor=cursor, limit=limit)
