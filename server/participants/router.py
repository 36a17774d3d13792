"""Participants of a study, for its staff. Enrolling one (POST /api/participants) gives the
first access code as well, so that route is server.participant_auth's."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile

from server.core.db import DBSession
from server.core.errors import NotFound, PayloadTooLarge
from server.participants import csv_import, service
from server.participants.deps import ParticipantManager, ParticipantReader
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
    dry_run: bool = False,
) -> ImportReport:
    content = await file.read(MAX_IMPORT_BYTES + 1)
    if len(content) > MAX_IMPORT_BYTES:
        raise PayloadTooLarge(f"The file is larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MB.")
    return await csv_import.import_csv(
        db, study_id=access.study.id, scope=access.sites, content=content, dry_run=dry_run
    )


@router.get("/{participant_id}", response_model=ParticipantRead)
async def get_participant(access: ParticipantReader) -> ParticipantRead:
    return ParticipantRead.model_validate(access.participant)


@router.patch("/{participant_id}", response_model=ParticipantRead)
async def update_participant(
    participant_in: ParticipantUpdate, access: ParticipantManager, db: DBSession
) -> ParticipantRead:
    participant = await service.update(
        db,
        participant=access.participant,
        participant_in=participant_in,
        scope=access.study.sites,
    )
    return ParticipantRead.model_validate(participant)


@router.get("/{participant_id}/contact", response_model=ContactRead)
async def get_contact(access: ParticipantManager, db: DBSession) -> ContactRead:
    return ContactRead.model_validate(await service.get_contact(db, participant=access.participant))


@router.put("/{participant_id}/contact", response_model=ContactRead)
async def set_contact(
    contact_in: ContactIn, access: ParticipantManager, db: DBSession
) -> ContactRead:
    contact = await service.set_contact(db, participant=access.participant, contact_in=contact_in)
    return ContactRead.model_validate(contact)
