"""Participant access codes: the first one given at enrolment, more on request, each exchanged
once for a participant token."""

from __future__ import annotations

from enum import Enum

from fastapi import APIRouter, Depends, status

from server.audit import service as audit
from server.audit.models import AuditAction
from server.core.config import AppSettings
from server.core.db import DBSession
from server.core.ratelimit import participant_auth_rate_limit
from server.participant_auth import service
from server.participant_auth.schemas import (
    AccessCodeIssued,
    ParticipantAuthRequest,
    ParticipantToken,
)
from server.participants import service as participants_service
from server.participants.deps import ParticipantManager
from server.participants.schemas import ParticipantCreate, ParticipantEnrolled, ParticipantRead
from server.studies.deps import StudyManager

# Tags by route: enrolment is listed with the participants routes in /docs.
router = APIRouter(prefix="/api/participants")
ACCESS_TAGS: list[str | Enum] = ["participant access"]


@router.post(
    "",
    response_model=ParticipantEnrolled,
    status_code=status.HTTP_201_CREATED,
    tags=["participants"],
)
async def create_participant(
    participant_in: ParticipantCreate, access: StudyManager, db: DBSession, settings: AppSettings
) -> ParticipantEnrolled:
    # Enrolment: the participant, and their first access code.
    participant = await participants_service.create(
        db, study_id=access.study.id, participant_in=participant_in, scope=access.sites,
        settings=settings,
    )  # fmt: skip
    code = await service.issue_code(db, settings, participant=participant)
    contact = participant_in.contact
    await audit.record(
        db,
        action=AuditAction.participant_enrolled,
        object_type="participant",
        object_id=participant.id,
        study_id=participant.study_id,
        site_id=participant.site_id,
        summary={
            "status": participant.status.value,
            # Which contact details were given, never what they are.
            "contact_fields": sorted(contact.model_dump(exclude_defaults=True)) if contact else [],
        },
    )
    return ParticipantEnrolled(
        **ParticipantRead.model_validate(participant).model_dump(),
        access_code=code.access_code,
        access_code_expires_at=code.expires_at,
    )


@router.post(
    "/{participant_id}/access-code",
    response_model=AccessCodeIssued,
    status_code=status.HTTP_201_CREATED,
    tags=ACCESS_TAGS,
)
async def issue_access_code(
    access: ParticipantManager, db: DBSession, settings: AppSettings
) -> AccessCodeIssued:
    return await service.issue_code(db, settings, participant=access.participant)


@router.post(
    "/auth",
    response_model=ParticipantToken,
    dependencies=[Depends(participant_auth_rate_limit)],
    tags=ACCESS_TAGS,
)
async def participant_auth(
    body: ParticipantAuthRequest, db: DBSession, settings: AppSettings
) -> ParticipantToken:
    return await service.exchange(db, settings, access_code=body.access_code)
