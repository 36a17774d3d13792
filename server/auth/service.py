"""Login, refresh and logout."""

from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit import service as audit
from server.audit.models import AuditAction
from server.auth.schemas import TokenPair
from server.core.config import Settings
from server.core.errors import Unauthorized
from server.core.security import create_access_token, verify_password
from server.user_sessions import service as sessions_service
from server.user_sessions.models import UserSession
from server.users import service as users_service

log = structlog.get_logger(__name__)


def _tokens(settings: Settings, session: UserSession, refresh_token: str) -> TokenPair:
    access_token, _ = create_access_token(settings, subject=session.user_id, session_id=session.id)
    return TokenPair(
        access_token=access_token,
        expires_in=settings.ACCESS_TOKEN_EXPIRE_MINUTES * 60,
        refresh_token=refresh_token,
    )


async def login(
    db: AsyncSession, settings: Settings, *, email: str, password: str, user_agent: str
) -> TokenPair | Unauthorized:
    """New tokens, or the refusal to answer with: returned, not raised, so that the failed
    attempt's audit entry commits. Neither entry holds the email or the password."""
    user = await users_service.get_by_email(db, email)
    valid, new_hash = verify_password(password, user.password_hash if user else None)
    if user is None or not valid or not user.is_active:
        log.info("login_failed")
        reason = "unknown_account" if user is None else "disabled" if valid else "wrong_password"
        await audit.record(
            db,
            action=AuditAction.login_failed,
            actor_id=None if user is None else user.id,
            object_type="user",
            object_id=None if user is None else user.id,
            summary={"reason": reason},
        )
        return Unauthorized("Incorrect email or password.", error_code="invalid_credentials")
    if new_hash:
        user.password_hash = new_hash
    session, refresh_token = await sessions_service.open_session(
        db, settings, user_id=user.id, user_agent=user_agent
    )
    log.info("login_succeeded", user_id=str(user.id), session_id=str(session.id))
    await audit.record(
        db,
        action=AuditAction.login_succeeded,
        actor_id=user.id,
        object_type="user",
        object_id=user.id,
        summary={"session_id": str(session.id)},
    )
    return _tokens(settings, session, refresh_token)


async def refresh(
    db: AsyncSession, settings: Settings, *, refresh_token: str
) -> TokenPair | Unauthorized:
    """New tokens, or the refusal to answer with. The refusal is returned, not raised: a
    replayed token revokes its session, and that revocation must commit."""
    rotated = await sessions_service.rotate(db, refresh_token)
    if rotated is None:
        return Unauthorized("The refresh token is invalid or has expired.")
    session, new_refresh = rotated
    user = await users_service.get(db, session.user_id)
    if not user.is_active:
        return Unauthorized("This account is disabled.")
    return _tokens(settings, session, new_refresh)
