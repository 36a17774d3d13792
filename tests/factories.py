"""Typed factories: they flush, never commit, and return ORM objects."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from functools import lru_cache

from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.core.security import create_access_token, hash_password
from server.participants import contacts
from server.participants.models import Participant, ParticipantContact
from server.studies.models import Site, Study, StudyMembership, StudyMembershipSite, StudyRole
from server.user_sessions import service as sessions_service
from server.users.models import User

DEFAULT_PASSWORD = "correct-horse-battery"


@lru_cache
def _hash(password: str) -> str:
    # argon2 is slow on purpose; one hash per distinct password keeps the suite quick.
    return hash_password(password)


def _suffix() -> str:
    return uuid.uuid4().hex[:8]


async def create_user(
    db: AsyncSession,
    *,
    email: str | None = None,
    password: str = DEFAULT_PASSWORD,
    is_admin: bool = False,
    is_active: bool = True,
) -> User:
    user = User(
        email=email or f"user-{_suffix()}@example.org",
        password_hash=_hash(password),
        is_admin=is_admin,
        is_active=is_active,
        display_name="Test User",
    )
    db.add(user)
    await db.flush()
    return user


async def create_study(db: AsyncSession, *, code: str | None = None) -> Study:
    study = Study(code=code or f"S{_suffix()}", name="Study", description="")
    db.add(study)
    await db.flush()
    return study


async def create_site(db: AsyncSession, study: Study, *, code: str | None = None) -> Site:
    site = Site(study_id=study.id, code=code or f"SITE{_suffix()}", name="Site", timezone="UTC")
    db.add(site)
    await db.flush()
    return site


async def add_member(
    db: AsyncSession, study: Study, user: User, role: StudyRole, *, sites: Sequence[Site] = ()
) -> StudyMembership:
    """A membership of the whole study, or of only these sites."""
    membership = StudyMembership(study_id=study.id, user_id=user.id, role=role)
    db.add(membership)
    await db.flush()
    db.add_all(StudyMembershipSite(membership_id=membership.id, site_id=s.id) for s in sites)
    await db.flush()
    return membership


# The key the test app decrypts contacts with (tests.conftest.make_settings's JWT secret).
# Built at first use, not at import: the benchmarks import this module without the test
# servers' DATABASE_URL and REDIS_URL in their environment, which Settings requires.
@lru_cache(maxsize=1)
def _contact_settings() -> Settings:
    return Settings(ENVIRONMENT="test", JWT_SECRET_KEY=SecretStr("test-secret-" + "x" * 40))


async def create_participant(
    db: AsyncSession,
    site: Site,
    *,
    code: str | None = None,
    email: str | None = None,
    phone: str | None = None,
) -> Participant:
    participant = Participant(
        study_id=site.study_id, site_id=site.id, participant_code=code or f"P-{_suffix()}"
    )
    db.add(participant)
    await db.flush()
    if email or phone:
        # Sealed as the service seals it, with the process's settings' key.
        contact = ParticipantContact(participant_id=participant.id)
        contacts.write(contact, _contact_settings(), email=email, phone=phone, push=None)
        db.add(contact)
        await db.flush()
    return participant


async def auth_headers(db: AsyncSession, settings: Settings, user: User) -> dict[str, str]:
    """A live login session for the user, without paying for a password check."""
    session, _refresh = await sessions_service.open_session(
        db, settings, user_id=user.id, user_agent="tests"
    )
    token, _ = create_access_token(settings, subject=user.id, session_id=session.id)
    return {"Authorization": f"Bearer {token}"}
