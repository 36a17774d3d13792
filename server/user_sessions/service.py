"""Server-side login sessions: created at login, rotated at refresh, revoked at logout."""

from __future__ import annotations

import uuid
from datetime import timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.core.errors import NotFound
from server.core.models import utcnow
from server.core.security import hash_token, new_opaque_token
from server.user_sessions.models import UserSession

log = structlog.get_logger(__name__)


async def open_session(
    db: AsyncSession, settings: Settings, *, user_id: uuid.UUID, user_agent: str
) -> tuple[UserSession, str]:
    refresh_token = new_opaque_token()
    now = utcnow()
    session = UserSession(
        user_id=user_id,
        refresh_token_hash=hash_token(refresh_token),
        user_agent=user_agent[:255],
        created_at=now,
        last_used_at=now,
        expires_at=now + timedelta(days=settings.REFRESH_TOKEN_EXPIRE_DAYS),
    )
    db.add(session)
    await db.flush()
    return session, refresh_token


async def rotate(db: AsyncSession, refresh_token: str) -> tuple[UserSession, str] | None:
    """Swap a live refresh token for a new one; an old or unknown token gets nothing.

    A token that was already swapped is a replay (a stolen copy, most likely): the whole
    session is revoked, so neither the thief nor the owner keeps it.
    """
    digest = hash_token(refresh_token)
    result = await db.execute(
        select(UserSession).where(UserSession.refresh_token_hash == digest).with_for_update()
    )
    session = result.scalar_one_or_none()
    now = utcnow()
    if session is None:
        replayed = await db.scalar(
            select(UserSession).where(UserSession.previous_refresh_token_hash == digest)
        )
        if replayed is not None and replayed.revoked_at is None:
            replayed.revoked_at = now
            await db.flush()
            log.warning("refresh_token_reuse", session_id=str(replayed.id))
        return None
    if not session.is_active(now):
        return None
    new_token = new_opaque_token()
    session.previous_refresh_token_hash = digest
    session.refresh_token_hash = hash_token(new_token)
    session.last_used_at = now
    await db.flush()
    return session, new_token


async def list_for_user(db: AsyncSession, user_id: uuid.UUID) -> list[UserSession]:
    result = await db.execute(
        select(UserSession)
        .where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
        .where(UserSession.expires_at > utcnow())
        .order_by(UserSession.created_at.desc())
    )
    return list(result.scalars())


async def revoke(db: AsyncSession, *, user_id: uuid.UUID, session_id: uuid.UUID) -> None:
    session = await db.get(UserSession, session_id)
    # Someone else's session is not yours to know about: 404, like any other unknown id.
    if session is None or session.user_id != user_id:
        raise NotFound("No such login session.")
    if session.revoked_at is None:
        session.revoked_at = utcnow()
    await db.flush()


async def revoke_all(db: AsyncSession, *, user_id: uuid.UUID) -> None:
    await db.execute(
        update(UserSession)
        .where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
