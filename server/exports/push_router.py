"""REDCap pushes over HTTP: ask (202 and a job), follow (progress and counts per outcome), and
read the per-record results (the sync's). The study's coordinators; every request audited."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from server.audit import service as audit
from server.audit.models import AuditAction
from server.auth.deps import CurrentPrincipal
from server.core.db import DBSession
from server.exports import listing, push_read, redcap_push
from server.exports.deps import PUSH_PERMISSION, PushReader
from server.exports.models import RedcapPush
from server.exports.schemas import RedcapPushCreate, RedcapPushPage, RedcapPushRead
from server.redcap.models import SyncStatus
from server.redcap.schemas import SyncStatePage
from server.studies.access import StudyAccess
from server.studies.deps import study_access

router = APIRouter(prefix="/api/exports/redcap-pushes", tags=["exports"])

StudyPusher = Annotated[StudyAccess, Depends(study_access(PUSH_PERMISSION))]


@router.post(
    "",
    response_model=RedcapPushRead,
    status_code=status.HTTP_202_ACCEPTED,
    responses={409: {"description": "The study has no REDCap connection (redcap_not_connected)"}},
)
async def request_push(
    body: RedcapPushCreate, access: StudyPusher, principal: CurrentPrincipal, db: DBSession
) -> RedcapPushRead:
    """Send the study's sessions chosen by these filters (an export's: sites, modules, dates,
    participant statuses; a site-scoped coordinator: of their sites) to REDCap again through
    the current mapping, as one job; 202 with its id and job. Each record keeps its REDCap
    record id and repeat instance, so REDCap updates it (no second instance). The same
    sessions an export would read: accepted, never quarantined, as consent allows. Follow it
    with GET /api/exports/redcap-pushes/{push_id}."""
    push = await redcap_push.create(db, access=access, user_id=principal.user.id, request=body)
    await audit.record(
        db,
        action=AuditAction.redcap_push_requested,
        object_type="redcap_push",
        object_id=push.id,
        study_id=push.study_id,
        summary={"filters": push.filters},
    )
    return await push_read.read(db, push)


@router.get("", response_model=RedcapPushPage)
async def list_pushes(
    access: StudyPusher,
    db: DBSession,
    cursor: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> RedcapPushPage:
    """The study's REDCap pushes, newest first (a site-scoped coordinator: those of their
    sites), each with its progress and counts. Pages by next_cursor."""
    rows, next_cursor = await listing.page(db, RedcapPush, access, cursor=cursor, limit=limit)
    return RedcapPushPage(items=[await push_read.read(db, p) for p in rows],
                          next_cursor=next_cursor)  # fmt: skip


@router.get("/{push_id}", response_model=RedcapPushRead)
async def get_push(access: PushReader, db: DBSession) -> RedcapPushRead:
    """The job's state, its progress (records settled of total) and the records by outcome."""
    return await push_read.read(db, access.push)


@router.get("/{push_id}/records", response_model=SyncStatePage)
async def list_push_records(
    access: PushReader,
    db: DBSession,
    status: SyncStatus | None = None,
    cursor: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> SyncStatePage:
    """Per record, as the sync reports it: REDCap record id, event, instrument, instance,
    status, and REDCap's own message and field for a record it refused. Pages by next_cursor."""
    return await push_read.records(db, access.push, status=status, cursor=cursor, limit=limit)
