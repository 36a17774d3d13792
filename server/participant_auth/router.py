from __future__ import annotations

from fastapi import APIRouter, Depends, status

from server.core.config import AppSettings
from server.core.db import DBSession
from server.core.ratelimit import participant_auth_rate_limit
from server.participant_auth import service
from server.participant_auth.schemas import (
    AccessCodeIssued,
    ParticipantAuthRequest,
    ParticipantToken,
)
from server.participants.deps import ParticipantManager

router = APIRouter(prefix="/api/participants", tags=["participant access"])


@router.post(
    "/{participant_id}/access-code",
    response_model=AccessCodeIssued,
    status_code=status.HTTP_201_CREATED,
)
async def issue_access_code(
    access: ParticipantManager, db: DBSession, settings: AppSettings
) -> AccessCodeIssued:
    return await service.issue_code(db, settings, participant=access.participant)


@router.post(
    "/auth", response_model=ParticipantToken, dependencies=[Depends(participant_auth_rate_limit)]
)
async def participant_auth(
    body: ParticipantAuthRequest, db: DBSession, settings: AppSettings
) -> ParticipantToken:
    return await service.exchange(db, settings, access_code=body.access_code)
