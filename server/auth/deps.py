"""The current principal: a bearer token whose server-side session is still live."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import AppSettings, Settings
from server.core.db import DBSession
from server.core.errors import Forbidden, Unauthorized
from server.core.models import utcnow
from server.core.request_context import set_actor_id
from server.core.security import PARTICIPANT_TOKEN, USER_TOKEN, decode_access_token
from server.user_sessions.models import UserSession
from server.users.models import User

oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl="/api/auth/login",
    auto_error=False,
    description="Staff: email (as username) and password, signed in at POST /api/auth/login.",
)


@dataclass(frozen=True)
class Principal:
    user: User
    session: UserSession

    @property
    def is_admin(self) -> bool:
        return self.user.is_admin


async def authenticate(db: AsyncSession, settings: Settings, token: str | None) -> Principal:
    if not token:
        raise Unauthorized()
    claims = decode_access_token(settings, token)
    if claims is not None and claims.kind == PARTICIPANT_TOKEN:
        # A genuine token, of the wrong kind: saying "invalid or expired" sends the app (or
        # whoever tries the route in /docs) after a new token that would not help either.
        raise Forbidden(
            "This route is for staff: a participant token cannot be used here. "
            "Sign in with a staff account.",
            error_code="staff_only",
        )
    if claims is None or claims.kind != USER_TOKEN:
        raise Unauthorized("The access token is invalid or has expired.")
    session = await db.get(UserSession, claims.session_id)
    # Checked on every request: a revoked or expired login stops working at once.
    if session is None or session.user_id != claims.subject or not session.is_active(utcnow()):
        raise Unauthorized("This login session has ended; sign in again.")
    user = await db.get(User, claims.subject)
    if user is None or not user.is_active:
        raise Unauthorized("This account is disabled.")
    # The audit trail's actor for whatever this request goes on to record.
    set_actor_id(user.id)
    return Principal(user=user, session=session)


async def current_principal(
    db: DBSession, settings: AppSettings, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> Principal:
    return await authenticate(db, settings, token)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def current_admin(principal: CurrentPrincipal) -> Principal:
    if not principal.is_admin:
        raise Forbidden("Only administrators can do this.")
    return principal


CurrentAdmin = Annotated[Principal, Depends(current_admin)]


async def current_audit_reader(principal: CurrentPrincipal) -> Principal:
    if not (principal.is_admin or principal.user.is_auditor):
        raise Forbidden("Only administrators and auditors can read the audit trail.")
    return principal


CurrentAuditReader = Annotated[Principal, Depends(current_audit_reader)]
