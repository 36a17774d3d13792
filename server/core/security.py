"""Password hashing and JWT access tokens."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from jose import JWTError, jwt
from passlib.context import CryptContext

from server.core.config import Settings
from server.core.models import utcnow

# argon2 by default; bcrypt stays verifiable so imported hashes still log in and get upgraded.
pwd_context = CryptContext(schemes=["argon2", "bcrypt"], deprecated="auto")

# The kinds of access token ("typ"): each route takes one kind, and says so when given the other.
USER_TOKEN = "user"
PARTICIPANT_TOKEN = "participant"


@cache
def _dummy_hash() -> str:
    """A hash verified on unknown accounts, so a missing user costs as much time as a wrong
    password. Made at the first such login, not at import: argon2 takes 64 MiB while it
    hashes, and every process imports this module (an export worker's peak memory was 64 MiB
    higher for it)."""
    return str(pwd_context.hash(secrets.token_urlsafe(16)))


def hash_password(password: str) -> str:
    return str(pwd_context.hash(password))


def verify_password(password: str, password_hash: str | None) -> tuple[bool, str | None]:
    """Return (valid, new_hash); new_hash is set when the stored hash should be upgraded."""
    if password_hash is None:
        pwd_context.verify(password, _dummy_hash())
        return False, None
    valid, new_hash = pwd_context.verify_and_update(password, password_hash)
    return bool(valid), new_hash


def password_problems(password: str, *, email: str, min_length: int) -> list[str]:
    problems: list[str] = []
    if len(password) < min_length:
        problems.append(f"must be at least {min_length} characters")
    if len(password) > 256:
        problems.append("must be at most 256 characters")
    lowered = password.lower()
    local_part = email.split("@", 1)[0].lower()
    if lowered == email.lower() or (len(local_part) >= 4 and local_part in lowered):
        problems.append("must not contain your email address")
    if len(set(password)) < 4:
        problems.append("must not be one character repeated")
    return problems


def hash_token(token: str) -> str:
    """Refresh tokens and access codes are stored only as their SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_opaque_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class AccessClaims:
    subject: uuid.UUID
    session_id: uuid.UUID
    token_id: str
    kind: str
    expires_at: datetime


def create_access_token(
    settings: Settings,
    *,
    subject: uuid.UUID,
    session_id: uuid.UUID,
    kind: str = USER_TOKEN,
    expires_in: timedelta | None = None,
) -> tuple[str, datetime]:
    now = utcnow()
    if expires_in is None:
        expires_in = timedelta(minutes=settings.ACCESS_TOKEN_EXPIRE_MINUTES)
    expires_at = now + expires_in
    claims: dict[str, Any] = {
        "sub": str(subject),
        "sid": str(session_id),
        "jti": uuid.uuid4().hex,
        "typ": kind,
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
    }
    token = jwt.encode(
        claims, settings.JWT_SECRET_KEY.get_secret_value(), algorithm=settings.JWT_ALGORITHM
    )
    return str(token), expires_at


def decode_access_token(settings: Settings, token: str) -> AccessClaims | None:
    """None for any token that is malformed, forged, expired or of an unexpected shape."""
    try:
        claims = jwt.decode(
            token,
            settings.JWT_SECRET_KEY.get_secret_value(),
            algorithms=[settings.JWT_ALGORITHM],
            options={
                "require_exp": True,
                "require_iat": True,
                "require_sub": True,
                "require_jti": True,
            },
        )
        return AccessClaims(
            subject=uuid.UUID(claims["sub"]),
            session_id=uuid.UUID(claims["sid"]),
            token_id=str(claims["jti"]),
            kind=str(claims.get("typ", USER_TOKEN)),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), tz=utcnow().tzinfo),
        )
    except (JWTError, KeyError, ValueError, TypeError):
        return None
