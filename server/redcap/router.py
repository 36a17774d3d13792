from __future__ import annotations

import uuid
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Response
from fastapi import status as http_status
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit import service as audit
from server.audit.models import AuditAction
from server.auth.deps import CurrentPrincipal
from server.core.config import AppSettings
from server.core.db import DBSession
from server.redcap import participant_import_job, routing, service, sync_states
from server.redcap import preview as preview_service
from server.redcap.deps import ConnectionManager, ConnectionReader
from server.redcap.models import RedcapConnection, SyncStatus
from server.redcap.schemas import (
    ConnectionCreate,
    ConnectionRead,
    ConnectionTestResult,
    ConnectionUpdate,
    MappingIn,
    MappingRead,
    ParticipantImportIn,
    ParticipantImportRead,
    PreviewRead,
    ResyncIn,
    ResyncRead,
    SyncStatePage,
)
from server.studies.deps import StudyConfigurer, StudyReader

router = APIRouter(prefix="/api/redcap", tags=["redcap"])

# REDCap's own failures answer 502 (error_code redcap_error) with REDCap's message; a URL the
# production policy refuses (server.redcap.url_policy) 422, before anything is sent.
_REDCAP_ERRORS: dict[int | str, dict[str, str]] = {
    422: {"description": "The connection's API URL is not allowed here (redcap_url_refused)"},
    502: {"description": "REDCap refused the call or could not be reached (its message)"},
    503: {"description": "The call budget for this REDCap server is used up for now"},
}


async def _record(
    db: AsyncSession,
    action: AuditAction,
    connection: RedcapConnection,
    summary: dict[str, object],
) -> None:
    await audit.record(
        db,
        action=action,
        object_type="redcap_connection",
        object_id=connection.id,
        study_id=connection.study_id,
        site_id=connection.site_id,
        summary=summary,
    )


@router.post(
    "/connections",
    response_model=ConnectionRead,
    status_code=http_status.HTTP_201_CREATED,
    responses={409: {"description": "The study (or site) already has a connection"}},
)
async def create_connection(
    connection_in: ConnectionCreate, access: StudyConfigurer, db: DBSession, settings: AppSettings
) -> ConnectionRead:
    connection = await service.create_connection(
        db, settings, study_id=access.study.id, connection_in=connection_in
    )
    # The token is a credential: neither it nor its last digits go into the trail; nor the
    # URL, which could carry a user and password: its host only.
    await _record(
        db,
        AuditAction.redcap_connection_created,
        connection,
        {"api_host": urlsplit(connection.api_url).hostname, "enabled": connection.enabled},
    )
    return ConnectionRead.model_validate(connection)


@router.get("/connections", response_model=list[ConnectionRead])
async def list_connections(access: StudyReader, db: DBSession) -> list[ConnectionRead]:
    connections = await service.list_connections(db, study_id=access.study.id, scope=access.sites)
    return [ConnectionRead.model_validate(c) for c in connections]


@router.get("/connections/{connection_id}", response_model=ConnectionRead)
async def get_connection(access: ConnectionReader) -> ConnectionRead:
    return ConnectionRead.model_validate(access.connection)


@router.patch("/connections/{connection_id}", response_model=ConnectionRead)
async def update_connection(
    connection_in: ConnectionUpdate, access: ConnectionManager, db: DBSession, settings: AppSettings
) -> ConnectionRead:
    connection = await service.update_connection(
        db, settings, connection=access.connection, connection_in=connection_in
    )
    fields = sorted(connection_in.model_dump(exclude_unset=True, exclude_none=True))
    if fields:
        await _record(db, AuditAction.redcap_connection_updated, connection, {"fields": fields})
    return ConnectionRead.model_validate(connection)


@router.delete("/connections/{connection_id}", status_code=http_status.HTTP_204_NO_CONTENT)
async def delete_connection(access: ConnectionManager, db: DBSession) -> Response:
    await _record(
        db,
        AuditAction.redcap_connection_deleted,
        access.connection,
        {"api_host": urlsplit(access.connection.api_url).hostname},
    )
    await service.delete_connection(db, connection=access.connection)
    return Response(status_code=http_status.HTTP_204_NO_CONTENT)


@router.post(
    "/connections/{connection_id}/test",
    response_model=ConnectionTestResult,
    responses=_REDCAP_ERRORS,
)
async def test_connection(
    access: ConnectionManager, db: DBSession, settings: AppSettings
) -> ConnectionTestResult:
    return await service.test_connection(db, settings, connection=access.connection)


@router.put(
    "/connections/{connection_id}/mapping", response_model=MappingRead, responses=_REDCAP_ERRORS
)
async def put_mapping(
    mapping_in: MappingIn, access: ConnectionManager, db: DBSession, settings: AppSettings
) -> MappingRead:
    mapping = await service.save_mapping(
        db, settings, connection=access.connection, mapping_in=mapping_in
    )
    await _record(
        db,
        AuditAction.redcap_mapping_saved,
        access.connection,
        {"record_id_field": mapping_in.record_id_field, "fields": len(mapping_in.fields)},
    )
    return mapping


@router.get("/connections/{connection_id}/mapping", response_model=MappingRead)
async def get_mapping(access: ConnectionReader, db: DBSession) -> MappingRead:
    return await service.get_mapping(db, connection=access.connection)


@router.get("/connections/{connection_id}/preview", response_model=PreviewRead)
async def preview(access: ConnectionReader, db: DBSession, submission_id: uuid.UUID) -> PreviewRead:
    return await preview_service.preview(
        db, connection=access.connection, scope=access.study.sites, submission_id=submission_id
    )


@router.post("/connections/{connection_id}/resync", response_model=ResyncRead)
async def resync(
    access: ConnectionManager, db: DBSession, resync_in: ResyncIn | None = None
) -> ResyncRead:
    submission_id = resync_in.submission_id if resync_in is not None else None
    reset = await routing.resync(db, access.connection.id, submission_id)
    await _record(
        db,
        AuditAction.redcap_resync,
        access.connection,
        {
            "submission_id": None if submission_id is None else str(submission_id),
            "reset": len(reset),
        },
    )
    return ResyncRead(reset=len(reset), submission_ids=reset)


@router.get("/connections/{connection_id}/sync-states", response_model=SyncStatePage)
async def list_sync_states(
    access: ConnectionReader,
    db: DBSession,
    status: SyncStatus | None = None,
    cursor: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> SyncStatePage:
    return await sync_states.list_sync_states(
        db,
        connection=access.connection,
        scope=access.study.sites,
        status=status,
        cursor=cursor,
        limit=limit,
    )


@router.post(
    "/connections/{connection_id}/participant-import",
    response_model=ParticipantImportRead,
    status_code=http_status.HTTP_202_ACCEPTED,
    responses={422: {"description": "The settings name a site this study does not have"}},
)
async def import_participants(
    import_in: ParticipantImportIn,
    access: ConnectionManager,
    principal: CurrentPrincipal,
    db: DBSession,
) -> ParticipantImportRead:
    """Queued as a job (REDCap is called by the worker, never inside this request): read
    its status and report at GET .../participant-imports/{import_id}."""
    return await participant_import_job.request_import(
        db,
        connection=access.connection,
        import_in=import_in,
        requested_by=principal.user.id,
    )


@router.get(
    "/connections/{connection_id}/participant-imports/{import_id}",
    response_model=ParticipantImportRead,
)
async def get_participant_import(
    import_id: uuid.UUID, access: ConnectionManager, db: DBSession
) -> ParticipantImportRead:
    return await participant_import_job.get_import(
        db, connection=access.connection, import_id=import_id
    )
