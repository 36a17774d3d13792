"""The current participant: a participant token whose device login is still live."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from server.auth.deps import oauth2_scheme
from server.core.config import AppSettings, Settings
from server.core.db import AutocommitSession, DBSession, statement_connection
from server.core.errors import Unauthorized
from server.core.models import utcnow
from server.core.security import decode_access_token
from server.participant_auth.service import INACTIVE, PARTICIPANT_TOKEN
from server.participants.models import ParticipantStatus
from server.participants.schemas import ParticipantRef


@dataclass(frozen=True)
class ParticipantPrincipal:
    participant: ParticipantRef
    login_id: uuid.UUID


_LOGIN_SQL = """
    SELECT l.expires_at, l.revoked_at, p.id, p.study_id, p.site_id, p.status
    FROM participant_logins l JOIN participants p ON p.id = l.participant_id
    WHERE l.id = $1
"""


async def _login(db: AsyncSession, login_id: uuid.UUID) -> Sequence[Any] | None:
    """One round trip, columns only: this runs before every submission."""
    # Straight to asyncpg, like the insert that follows it (server.submissions.store).
    async with statement_connection(db) as connection:
        return await connection.fetchrow(_LOGIN_SQL, login_id)  # type: ignore[no-any-return]


async def authenticate_participant(
    db: AsyncSession, settings: Settings, token: str | None
) -> ParticipantPrincipal:
    if not token:
        raise Unauthorized()
    claims = decode_access_token(settings, token)
    # A staff token is not a participant token, and the reverse holds in server.auth.deps.
    if claims is None or claims.kind != PARTICIPANT_TOKEN:
        raise Unauthorized("A participant token is required.")
    row = await _login(db, claims.session_id)
    if row is None:
        raise Unauthorized("This participant login has ended.")
    expires_at, revoked_at, participant_id, study_id, site_id, status = row
    status = ParticipantStatus(status)
    if (
        revoked_at is not None
        or expires_at <= utcnow()
        or participant_id != claims.subject
        or status in INACTIVE
    ):
        raise Unauthorized("This participant login has ended.")
    participant = ParticipantRef(
        id=participant_id, study_id=study_id, site_id=site_id, status=status
    )
    return ParticipantPrincipal(participant=participant, login_id=claims.session_id)


async def current_participant(
    db: DBSession, settings: AppSettings, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> ParticipantPrincipal:
    return await authenticate_participant(db, settings, token)


async def current_participant_autocommit(
    request: Request,
    db: AutocommitSession,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> ParticipantPrincipal:
    """The same check on the ingest route's autocommit session: the login is read on a pooled
    connection given back at once (statement_connection), not held while the route works.

    Settings come straight from the app: AppSettings is a plain `def`, which FastAPI runs in
    its thread pool, a thread hand-off per request.
    """
    return await authenticate_participant(db, request.app.state.settings, token)


CurrentParticipant = Annotated[ParticipantPrincipal, Depends(current_participant)]
IngestParticipant = Annotated[ParticipantPrincipal, Depends(current_participant_autocommit)]
