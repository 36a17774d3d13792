"""Staff accounts: creation, password rules, lookup."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.core.errors import Conflict, NotFound, Unprocessable
from server.core.security import hash_password, password_problems
from server.users.models import User
from server.users.schemas import UserCreate, UserUpdate


def normalize_email(email: str) -> str:
    return email.strip().lower()


def check_password(settings: Settings, password: str, email: str) -> None:
    problems = password_problems(password, email=email, min_length=settings.PASSWORD_MIN_LENGTH)
    if problems:
        raise Unprocessable(
            "The password does not meet the rules.",
            error_code="weak_password",
            details=[{"loc": ["body", "password"], "msg": p} for p in problems],
        )


async def get_by_email(db: AsyncSession, email: str) -> User | None:
    result = await db.execute(select(User).where(User.email == normalize_email(email)))
    return result.scalar_one_or_none()


async def get(db: AsyncSession, user_id: uuid.UUID) -> User:
    user = await db.get(User, user_id)
    if user is None:
        raise NotFound("No such user.")
    return user


async def create(db: AsyncSession, settings: Settings, *, user_in: UserCreate) -> User:
    email = normalize_email(user_in.email)
    check_password(settings, user_in.password, email)
    if await get_by_email(db, email) is not None:
        raise Conflict("An account with this email already exists.", error_code="email_taken")
    user = User(
        email=email,
        display_name=user_in.display_name,
        password_hash=hash_password(user_in.password),
        is_admin=user_in.is_admin,
        is_auditor=user_in.is_auditor,
    )
    db.add(user)
    await db.flush()
    return user


async def update(db: AsyncSession, settings: Settings, *, user: User, user_in: UserUpdate) -> User:
    if user_in.password is not None:
        check_password(settings, user_in.password, user.email)
        user.password_hash = hash_password(user_in.password)
    for field in ("display_name", "is_admin", "is_auditor", "is_active"):
        value = getattr(user_in, field)
        if value is not None:
            setattr(user, field, value)
    await db.flush()
    return user


async def list_users(db: AsyncSession) -> list[User]:
    result = await db.execute(select(User).order_by(User.email))
    return list(result.scalars())


async def count(db: AsyncSession) -> int:
    return int(await db.scalar(select(func.count()).select_from(User)) or 0)
