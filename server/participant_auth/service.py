"""Access codes for participants, exchanged once for a token scoped to that participant."""

from __future__ import annotations

import uuid
from datetime import timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.core.errors import Unauthorized, Unprocessable
from server.core.models import utcnow

# Re-exported ("as") for participant_auth.deps, which still imports it from here.
from server.core.security import PARTICIPANT_TOKEN as PARTICIPANT_TOKEN
from server.core.security import create_access_token
from server.participant_auth import codes
from server.participant_auth.models import AccessCode, ParticipantLogin
from server.participant_auth.schemas import AccessCodeIssued, ParticipantToken
from server.participants.models import Participant, ParticipantStatus

log = structlog.get_logger(__name__)

INACTIVE = (ParticipantStatus.withdrawn, ParticipantStatus.completed)
INACTIVE_STATUSES = [status.value for status in INACTIVE]


def login_ended() -> Unauthorized:
    return Unauthorized("This participant login has ended.")


# The rule of a live login, in the one place it is written: not revoked, not expired, the
# token's own participant, who is neither withdrawn nor completed (INACTIVE_STATUSES). A
# query of the participant's (id, study_id, site_id, status), no row once the login has
# ended: the participant check (deps.check_login) runs it alone, the ingest insert as its
# first CTE (server.submissions.store), so that a submission is one round trip.
LIVE_LOGIN_SQL = """
    SELECT p.id, p.study_id, p.site_id, p.status
    FROM participant_logins l JOIN participants p ON p.id = l.participant_id
    WHERE l.id = {login_id} AND p.id = {participant_id} AND l.revoked_at IS NULL
      AND l.expires_at > {now} AND p.status <> ALL({inactive}::text[])
"""


async def issue_code(
    db: AsyncSession, settings: Settings, *, participant: Participant
) -> AccessCodeIssued:
    """A fresh code; any earlier unused code of this participant stops working."""
    if participant.status in INACTIVE:
        raise Unprocessable(
            f"A {participant.status.value} participant cannot be given an access code.",
            error_code="participant_inactive",
        )
    now = utcnow()
    await db.execute(
        update(AccessCode)
        .where(
            AccessCode.participant_id == participant.id,
            AccessCode.used_at.is_(None),
            AccessCode.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    code = codes.new_code()
    expires_at = now + timedelta(hours=settings.ACCESS_CODE_EXPIRE_HOURS)
    db.add(
        AccessCode(
            participant_id=participant.id,
            code_hash=codes.code_hash(settings.JWT_SECRET_KEY.get_secret_value(), code),
            expires_at=expires_at,
        )
    )
    await db.flush()
    log.info("access_code_issued", participant_id=str(participant.id))
    return AccessCodeIssued(participant_id=participant.id, access_code=code, expires_at=expires_at)


async def exchange(db: AsyncSession, settings: Settings, *, access_code: str) -> ParticipantToken:
    digest = codes.code_hash(settings.JWT_SECRET_KEY.get_secret_value(), access_code)
    row = (
        await db.execute(
            select(AccessCode, Participant)
            .join(Participant, Participant.id == AccessCode.participant_id)
            .where(AccessCode.code_hash == digest)
            .with_for_update(of=AccessCode)
        )
    ).one_or_none()
    now = utcnow()
    if row is None:
        log.info("access_code_rejected", reason="unknown")
        raise Unauthorized("This access code is not valid.", error_code="invalid_access_code")
    code, participant = row
    if code.used_at or code.revoked_at or code.expires_at <= now or participant.status in INACTIVE:
        log.info(
            "access_code_rejected", reason="used_or_expired", participant_id=str(participant.id)
        )
        raise Unauthorized("This access code is not valid.", error_code="invalid_access_code")
    code.used_at = now
    if participant.status == ParticipantStatus.enrolled:
        participant.status = ParticipantStatus.active
    expires_in = timedelta(days=settings.PARTICIPANT_TOKEN_EXPIRE_DAYS)
    login = ParticipantLogin(participant_id=participant.id, expires_at=now + expires_in)
    db.add(login)
    await db.flush()
    token, _ = create_access_token(
        settings,
        subject=participant.id,
        session_id=login.id,
        kind=PARTICIPANT_TOKEN,
        expires_in=expires_in,
    )
    log.info("participant_authenticated", participant_id=str(participant.id))
    return ParticipantToken(
        access_token=token,
        expires_in=int(expires_in.total_seconds()),
        participant_id=participant.id,
        study_id=participant.study_id,
    )


async def revoke_logins(db: AsyncSession, *, participant_id: uuid.UUID) -> None:
    await db.execute(
        update(ParticipantLogin)
        .where(
            ParticipantLogin.participant_id == participant_id, ParticipantLogin.revoked_at.is_(None)
        )
        .values(revoked_at=utcnow())
    )
