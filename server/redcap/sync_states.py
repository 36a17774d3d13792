"""A connection's sync states as pages: each submission's REDCap record, event, instrument,
instance, status and REDCap's own words; by submission id, paged by next_cursor. The REDCap
push (server.exports.push_read) pages its records the same way."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.participants.models import Participant
from server.redcap.models import RedcapConnection, RedcapSyncState, SyncStatus
from server.redcap.schemas import SyncStatePage, SyncStateRead
from server.studies.access import SiteScope
from server.submissions.models import Submission


async def page(
    db: AsyncSession, query: Any, submission_id: Any, *, cursor: uuid.UUID | None, limit: int
) -> SyncStatePage:
    """One page of query's rows (anything with a sync state's fields), by submission_id."""
    if cursor is not None:
        query = query.where(submission_id > cursor)
    ordered = query.order_by(submission_id).limit(limit + 1)
    rows = list((await db.execute(ordered)).scalars().all())
    next_cursor = str(rows[limit - 1].submission_id) if len(rows) > limit else None
    return SyncStatePage(
        items=[SyncStateRead.model_validate(r) for r in rows[:limit]], next_cursor=next_cursor
    )


async def list_sync_states(
    db: AsyncSession,
    *,
    connection: RedcapConnection,
    scope: SiteScope,
    status: SyncStatus | None,
    cursor: uuid.UUID | None,
    limit: int,
) -> SyncStatePage:
    query = select(RedcapSyncState).where(RedcapSyncState.connection_id == connection.id)
    if not scope.whole_study:
        # A study-wide connection carries every site's submissions: only the member's sites'.
        seen = select(Submission.id).join(Participant, Participant.id == Submission.participant_id)
        query = query.where(
            RedcapSyncState.submission_id.in_(scope.filter(seen, Participant.site_id))
        )
    if status is not None:
        query = query.where(RedcapSyncState.status == status)
    return await page(db, query, RedcapSyncState.submission_id, cursor=cursor, limit=limit)
