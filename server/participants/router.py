"""Participants of a study, for its staff. Enrolling one (POST /api/participants) gives the
first access code as well, so that route is server.participant_auth's."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit import service as audit
from server.audit.models import AuditAction
from server.core.config import AppSettings
from server.core.db import DBSession
from server.core.errors import NotFound, PayloadTooLarge
from server.participants import csv_import, service
from server.participants.deps import ParticipantAccess, ParticipantManager, ParticipantReader
from server.participants.models import ParticipantStatus
from server.participants.schemas import (
    ContactIn,
    ContactRead,
    ImportReport,
    ParticipantPage,
    ParticipantRead,
    ParticipantUpdate,
)
from server.studies.deps import StudyManager, StudyReader

router = APIRouter(prefix="/api/participants", tags=["participants"])

MAX_IMPORT_BYTES = 5 * 1024 * 1024


@router.get("", response_model=ParticipantPage)
async def list_participants(
    access: StudyReader,
    db: DBSession,
    site_id: uuid.UUID | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ParticipantPage:
    if site_id is not None and not access.sites.covers(site_id):
        # Filtering by a site outside one's scope names a site one cannot see.
        raise NotFound("No such site in this study.")
    rows, next_cursor = await service.list_page(
        db,
        study_id=access.study.id,
        scope=access.sites,
        site_id=site_id,
        cursor=cursor,
        limit=limit,
    )
    return ParticipantPage(
        items=[ParticipantRead.model_validate(p) for p in rows], next_cursor=next_cursor
    )


@router.post("/import", response_model=ImportReport)
async def import_participants(
    access: StudyManager,
    db: DBSession,
    file: Annotated[UploadFile, File(description="CSV: participant_code, site_code, ...")],
    settings: AppSettings,
    dry_run: bool = False,
) -> ImportReport:
    content = await file.read(MAX_IMPORT_BYTES + 1)
    if len(content) > MAX_IMPORT_BYTES:
        raise PayloadTooLarge(f"The file is larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MB.")
    report = await csv_import.import_csv(
        db, settings, study_id=access.study.id, scope=access.sites, content=content, dry_run=dry_run
    )
    if report.created:
        await audit.record(
            db,
            action=AuditAction.participants_imported,
            object_type="study",
            object_id=access.study.id,
            study_id=access.study.id,
            summary={"created": report.created, "total_rows": report.total_rows},
        )
    return report


@router.get("/{participant_id}", response_model=ParticipantRead)
async def get_participant(access: ParticipantReader) -> ParticipantRead:
    return ParticipantRead.model_validate(access.participant)


@router.patch("/{participant_id}", response_model=ParticipantRead)
async def update_participant(
    participant_in: ParticipantUpdate, access: ParticipantManager, db: DBSession
) -> ParticipantRead:
    participant = access.participant
    before = {"status": participant.status.value, "site_id": str(participant.site_id)}
    participant = await service.update(
        db, participant=participant, participant_in=participant_in, scope=access.study.sites
    )
    after = {"status": participant.status.value, "site_id": str(participant.site_id)}
    changed = {k: {"from": before[k], "to": after[k]} for k in before if before[k] != after[k]}
    fields = sorted(participant_in.model_dump(exclude_none=True))
    if fields:
        withdrawn = "status" in changed and participant.status == ParticipantStatus.withdrawn
        await audit.record(
            db,
            action=(
                AuditAction.participant_withdrawn if withdrawn else AuditAction.participant_updated
            ),
            object_type="participant",
            object_id=participant.id,
            study_id=participant.study_id,
            site_id=participant.site_id,
            summary={"fields": fields, **changed},
        )
    return ParticipantRead.model_validate(participant)


@router.get("/{participant_id}/contact", response_model=ContactRead)
async def get_contact(
    access: ParticipantManager, db: DBSession, settings: AppSettings
) -> ContactRead:
    contact = await service.get_contact(db, settings, participant=access.participant)
    # Every read of contact details (PHI) is on the record: who, when, which fields.
    fields = [name for name in ("email", "phone") if getattr(contact, name) is not None]
    await _record_contact(db, access, AuditAction.contact_read, fields)
    return contact


@router.put("/{participant_id}/contact", response_model=ContactRead)
async def set_contact(
    contact_in: ContactIn, access: ParticipantManager, db: DBSession, settings: AppSettings
) -> ContactRead:
    contact = await service.set_contact(
        db, settings, participant=access.participant, contact_in=contact_in
    )
    await _record_contact(
        db,
        access,
        AuditAction.contact_updated,
        sorted(contact_in.model_dump(exclude_defaults=True)),
    )
    return contact


async def _record_contact(
    db: AsyncSession, access: ParticipantAccess, action: AuditAction, fields: list[str]
) -> None:
    participant = access.participant
    await audit.record(
        db,
        action=action,
        object_type="participant",
        object_id=participant.id,
        study_id=participant.study_id,
        site_id=participant.site_id,
        summary={"fields": fields},
    )
