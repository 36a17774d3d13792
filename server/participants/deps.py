"""valid_participant_id: a participant of a study you are not in answers 404."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from server.auth.deps import CurrentPrincipal
from server.core.db import DBSession
from server.participants import service
from server.participants.models import Participant
from server.studies.access import Permission, StudyAccess, require_study_of


@dataclass(frozen=True)
class ParticipantAccess:
    participant: Participant
    study: StudyAccess


def participant_access(permission: str) -> Callable[..., Awaitable[ParticipantAccess]]:
    async def dependency(
        participant_id: uuid.UUID, db: DBSession, principal: CurrentPrincipal
    ) -> ParticipantAccess:
        participant = await service.get_in_study(db, participant_id)
        access = await require_study_of(
            db,
            principal,
            participant.study_id,
            permission,
            thing="participant",
            site_id=participant.site_id,
        )
        return ParticipantAccess(participant=participant, study=access)

    return dependency


ParticipantReader = Annotated[ParticipantAccess, Depends(participant_access(Permission.READ))]
ParticipantManager = Annotated[ParticipantAccess, Depends(participant_access(Permission.MANAGE))]
