"""The current participant: a participant token whose device login is still live."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from sqlalchemy import select

from server.auth.deps import AppSettings, oauth2_scheme
from server.core.db import DBSession
from server.core.errors import Unauthorized
from server.core.models import utcnow
from server.core.security import decode_access_token
from server.participant_auth.models import ParticipantLogin
from server.participant_auth.service import INACTIVE, PARTICIPANT_TOKEN
from server.participants.models import Participant


@dataclass(frozen=True)
class ParticipantPrincipal:
    participant: Participant
    login_id: object


async def current_participant(
    db: DBSession, settings: AppSettings, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> ParticipantPrincipal:
    if not token:
        raise Unauthorized()
    claims = decode_access_token(settings, token)
    # A staff token is not a participant token, and the reverse holds in server.auth.deps.
    if claims is None or claims.kind != PARTICIPANT_TOKEN:
        raise Unauthorized("A participant token is required.")
    # One round trip: the login and its participant together.
    row = (
        await db.execute(
            select(ParticipantLogin.expires_at, ParticipantLogin.revoked_at, Participant)
            .join(Participant, Participant.id == ParticipantLogin.participant_id)
            .where(ParticipantLogin.id == claims.session_id)
        )
    ).one_or_none()
    if row is None:
        raise Unauthorized("This participant login has ended.")
    expires_at, revoked_at, participant = row
    if (
        revoked_at is not None
        or expires_at <= utcnow()
        or participant.id != claims.subject
        or participant.status in INACTIVE
    ):
        raise Unauthorized("This participant login has ended.")
    return ParticipantPrincipal(participant=participant, login_id=claims.session_id)


CurrentParticipant = Annotated[ParticipantPrincipal, Depends(current_participant)]
