"""Staff accounts, for administrators: here, not in server.users, because it needs the caller
(server.auth.deps), and server.auth needs server.users to know who is calling."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from server.audit import service as audit
from server.audit.models import AuditAction
from server.auth.deps import CurrentAdmin
from server.core.config import AppSettings
from server.core.db import DBSession
from server.users import service
from server.users.schemas import UserCreate, UserRead, UserUpdate

router = APIRouter(prefix="/api/users", tags=["users"])

_FLAGS = ("is_admin", "is_auditor", "is_active")


@router.get("", response_model=list[UserRead])
async def list_users(db: DBSession, _: CurrentAdmin) -> list[UserRead]:
    return [UserRead.model_validate(u) for u in await service.list_users(db)]


@router.post("", response_model=UserRead, status_code=status.HTTP_201_CREATED)
async def create_user(
    user_in: UserCreate, db: DBSession, settings: AppSettings, _: CurrentAdmin
) -> UserRead:
    user = await service.create(db, settings, user_in=user_in)
    await audit.record(
        db,
        action=AuditAction.user_created,
        object_type="user",
        object_id=user.id,
        summary={"is_admin": user.is_admin, "is_auditor": user.is_auditor},
    )
    return UserRead.model_validate(user)


@router.get("/{user_id}", response_model=UserRead)
async def get_user(user_id: uuid.UUID, db: DBSession, _: CurrentAdmin) -> UserRead:
    return UserRead.model_validate(await service.get(db, user_id))


@router.patch("/{user_id}", response_model=UserRead)
async def update_user(
    user_id: uuid.UUID, user_in: UserUpdate, db: DBSession, settings: AppSettings, _: CurrentAdmin
) -> UserRead:
    user = await service.get(db, user_id)
    before = {name: getattr(user, name) for name in _FLAGS}
    user = await service.update(db, settings, user=user, user_in=user_in)
    # Which fields were sent, and the account's flags before and after: never a password.
    changed = sorted(user_in.model_dump(exclude_none=True))
    if changed:
        await audit.record(
            db,
            action=AuditAction.user_updated,
            object_type="user",
            object_id=user.id,
            summary={
                "fields": changed,
                **{
                    name: {"from": before[name], "to": getattr(user, name)}
                    for name in _FLAGS
                    if before[name] != getattr(user, name)
                },
            },
        )
    return UserRead.model_validate(user)
