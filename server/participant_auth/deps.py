"""The current participant: a participant token whose device login is still live."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from server.auth.deps import oauth2_scheme
from server.core.config import AppSettings, Settings
from server.core.db import DBSession, statement_connection
from server.core.errors import Unauthorized
from server.core.models import utcnow
from server.core.security import decode_access_token
from server.participant_auth.service import (
    INACTIVE_STATUSES,
    LIVE_LOGIN_SQL,
    PARTICIPANT_TOKEN,
    login_ended,
)
from server.participants.models import ParticipantStatus
from server.participants.schemas import ParticipantRef


@dataclass(frozen=True)
class ParticipantPrincipal:
    participant: ParticipantRef
    login_id: uuid.UUID


@dataclass(frozen=True)
class ParticipantCredentials:
    """A participant token with a valid signature and expiry; its login not checked yet."""

    participant_id: uuid.UUID
    login_id: uuid.UUID


_LOGIN_SQL = LIVE_LOGIN_SQL.format(login_id="$1", participant_id="$2", now="$3", inactive="$4")


def read_participant_token(settings: Settings, token: str | None) -> ParticipantCredentials:
    if not token:
        raise Unauthorized()
    claims = decode_access_token(settings, token)
    # A staff token is not a participant token, and the reverse holds in server.auth.deps.
    if claims is None or claims.kind != PARTICIPANT_TOKEN:
        raise Unauthorized("A participant token is required.")
    return ParticipantCredentials(participant_id=claims.subject, login_id=claims.session_id)


async def check_login(db: AsyncSession, token: ParticipantCredentials) -> ParticipantPrincipal:
    """One round trip, columns only (straight to asyncpg, like the ingest insert)."""
    async with statement_connection(db) as connection:
        row = await connection.fetchrow(
            _LOGIN_SQL, token.login_id, token.participant_id, utcnow(), INACTIVE_STATUSES
        )
    if row is None:
        raise login_ended()
    participant_id, study_id, site_id, status = row
    participant = ParticipantRef(
        id=participant_id, study_id=study_id, site_id=site_id, status=ParticipantStatus(status)
    )
    return ParticipantPrincipal(participant=participant, login_id=token.login_id)


async def authenticate_participant(
    db: AsyncSession, settings: Settings, token: str | None
) -> ParticipantPrincipal:
    return await check_login(db, read_participant_token(settings, token))


async def current_participant(
    db: DBSession, settings: AppSettings, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> ParticipantPrincipal:
    return await authenticate_participant(db, settings, token)


async def participant_credentials(
    request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> ParticipantCredentials:
    """The ingest route's caller: the token is checked here, its login with the route's
    write (one round trip for both), or by check_login when the request fails before it.

    Settings come straight from the app: AppSettings is a plain `def`, which FastAPI runs in
    its thread pool, a thread hand-off per request.
    """
    return read_participant_token(request.app.state.settings, token)


CurrentParticipant = Annotated[ParticipantPrincipal, Depends(current_participant)]
IngestCredentials = Annotated[ParticipantCredentials, Depends(participant_credentials)]
