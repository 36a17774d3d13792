"""A user's own login sessions: list them, sign out of one or all. Here, not in
server.user_sessions, because it needs the caller (server.auth.deps), and server.auth needs
server.user_sessions to check a token's session."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from server.auth.deps import CurrentPrincipal
from server.core.db import DBSession
from server.user_sessions import service
from server.user_sessions.schemas import UserSessionRead

router = APIRouter(prefix="/api/user-sessions", tags=["user-sessions"])


@router.get("", response_model=list[UserSessionRead])
async def list_sessions(db: DBSession, principal: CurrentPrincipal) -> list[UserSessionRead]:
    sessions = await service.list_for_user(db, principal.user.id)
    return [
        UserSessionRead.model_validate(s).model_copy(
            update={"current": s.id == principal.session.id}
        )
        for s in sessions
    ]


@router.delete("/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_session(session_id: uuid.UUID, db: DBSession, principal: CurrentPrincipal) -> None:
    await service.revoke(db, user_id=principal.user.id, session_id=session_id)


@router.delete("", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_all_sessions(db: DBSession, principal: CurrentPrincipal) -> None:
    """Sign out everywhere, this session included."""
    await service.revoke_all(db, user_id=principal.user.id)
