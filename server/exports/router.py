"""Exports over HTTP: ask (202 and a job), follow (progress, then a link), download, freeze,
re-run a freeze. Researchers and coordinators of the study; every request and download is
audited (who, when, the filters)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from fastapi.responses import StreamingResponse

from server.archive.storage import ObjectNotFound, storage_from_settings
from server.audit import service as audit
from server.audit.models import AuditAction
from server.auth.deps import CurrentPrincipal
from server.core.config import AppSettings
from server.core.db import DBSession
from server.core.errors import NotFound
from server.exports import listing, service
from server.exports.deps import ExportReader
from server.exports.models import Export
from server.exports.schemas import ExportCreate, ExportPage, ExportRead
from server.studies.access import Permission, StudyAccess
from server.studies.deps import study_access

router = APIRouter(prefix="/api/exports", tags=["exports"])

StudyExporter = Annotated[StudyAccess, Depends(study_access(Permission.EXPORT))]


async def _read(
    db: DBSession, settings: AppSettings, export: Export, *, link: bool = True
) -> ExportRead:
    status, job_error = await service.job_status(db, export)
    read = ExportRead.model_validate(
        {
            **{c: getattr(export, c) for c in ExportRead.model_fields if hasattr(export, c)},
            "status": status,
            "job_error": job_error,
        }
    )
    if link and export.storage_key is not None:
        token, expires = service.download_token(
            settings.JWT_SECRET_KEY.get_secret_value(), export.id
        )
        read.download_url = f"/api/exports/{export.id}/download?token={token}"
        read.download_expires_at = expires
    return read


@router.post("", response_model=ExportRead, status_code=status.HTTP_202_ACCEPTED)
async def request_export(
    body: ExportCreate,
    access: StudyExporter,
    principal: CurrentPrincipal,
    db: DBSession,
    settings: AppSettings,
) -> ExportRead:
    """Queue an export of the study (a site-scoped member: of their sites); 202 with its id
    and job. Follow it with GET /api/exports/{id}."""
    export = await service.create(db, access=access, user_id=principal.user.id, request=body)
    await audit.record(
        db,
        action=AuditAction.export_requested,
        object_type="export",
        object_id=export.id,
        study_id=export.study_id,
        summary={"filters": export.filters, "formats": export.formats},
    )
    return await _read(db, settings, export)


@router.get("", response_model=ExportPage)
async def list_exports(
    access: StudyExporter,
    db: DBSession,
    settings: AppSettings,
    frozen: bool | None = None,
    cursor: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ExportPage:
    """The study's exports, newest first (a site-scoped member: those of their sites);
    frozen=true lists the freezes, to re-run one. Pages by next_cursor."""
    where = () if frozen is None else (Export.frozen_at.is_not(None) == frozen,)
    rows, next_cursor = await listing.page(
        db, Export, access, cursor=cursor, limit=limit, where=where
    )
    items = [await _read(db, settings, export, link=False) for export in rows]
    return ExportPage(items=items, next_cursor=next_cursor)


@router.get("/{export_id}", response_model=ExportRead)
async def get_export(access: ExportReader, db: DBSession, settings: AppSettings) -> ExportRead:
    """Status and progress (rows done of total); when done, a download link that expires."""
    return await _read(db, settings, access.export)


@router.get("/{export_id}/download", response_class=StreamingResponse)
async def download_export(
    access: ExportReader, db: DBSession, settings: AppSettings, token: str
) -> StreamingResponse:
    """The export's zip, with the token of a link from GET /api/exports/{id}."""
    export = access.export
    service.check_token(settings.JWT_SECRET_KEY.get_secret_value(), export.id, token)
    if export.storage_key is None:
        raise NotFound("This export has no file yet.")
    storage = storage_from_settings(settings)
    try:
        chunks = await asyncio.to_thread(storage.stream, export.storage_key)
    except ObjectNotFound:
        raise NotFound("This export's file is gone.") from None
    await audit.record(
        db,
        action=AuditAction.export_downloaded,
        object_type="export",
        object_id=export.id,
        study_id=export.study_id,
        summary={"filters": export.filters, "formats": export.formats, "sha256": export.sha256},
    )
    return StreamingResponse(
        chunks,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="export-{export.id}.zip"',
            "Content-Length": str(export.size_bytes),
        },
    )


@router.post("/{export_id}/freeze", response_model=ExportRead)
async def freeze_export(access: ExportReader, db: DBSession, settings: AppSettings) -> ExportRead:
    """Name a finished export a freeze: its submissions are kept listed, to re-run later."""
    export = await service.freeze(db, export=access.export, user_id=access.principal.user.id)
    await audit.record(
        db,
        action=AuditAction.export_frozen,
        object_type="export",
        object_id=export.id,
        study_id=export.study_id,
        summary={"filters": export.filters},
    )
    return await _read(db, settings, export)


@router.post("/{export_id}/rerun", response_model=ExportRead, status_code=status.HTTP_202_ACCEPTED)
async def rerun_freeze(access: ExportReader, db: DBSession, settings: AppSettings) -> ExportRead:
    """A new export of exactly the frozen one's submissions: the same bytes."""
    export = await service.rerun(db, source=access.export, user_id=access.principal.user.id)
    await audit.record(
        db,
        action=AuditAction.export_requested,
        object_type="export",
        object_id=export.id,
        study_id=export.study_id,
        summary={"filters": export.filters, "formats": export.formats,
                 "freeze_of": str(access.export.id)},
    )  # fmt: skip
    return await _read(db, settings, export)
