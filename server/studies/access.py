"""Who may do what in a study. Not a member: the study does not exist for you (404)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.auth.deps import Principal
from server.core.errors import Forbidden, NotFound
from server.studies.models import Study, StudyMembership, StudyRole


class Permission:
    READ = "read"
    EXPORT = "export"
    MANAGE = "manage"  # sites, participants, members


_GRANTS: dict[StudyRole, frozenset[str]] = {
    StudyRole.coordinator: frozenset({Permission.READ, Permission.EXPORT, Permission.MANAGE}),
    StudyRole.researcher: frozenset({Permission.READ, Permission.EXPORT}),
    StudyRole.viewer: frozenset({Permission.READ}),
}


@dataclass(frozen=True)
class StudyAccess:
    study: Study
    role: StudyRole | None  # None for a system admin who is not a member

    def can(self, permission: str) -> bool:
        return self.role is None or permission in _GRANTS[self.role]


async def membership_role(
    db: AsyncSession, *, study_id: uuid.UUID, user_id: uuid.UUID
) -> StudyRole | None:
    result = await db.execute(
        select(StudyMembership.role).where(
            StudyMembership.study_id == study_id, StudyMembership.user_id == user_id
        )
    )
    return result.scalar_one_or_none()


async def require_study(
    db: AsyncSession, principal: Principal, study_id: uuid.UUID, permission: str
) -> StudyAccess:
    study = await db.get(Study, study_id)
    if study is None:
        raise NotFound("No such study.")
    if principal.is_admin:
        return StudyAccess(study=study, role=None)
    role = await membership_role(db, study_id=study_id, user_id=principal.user.id)
    if role is None:
        raise NotFound("No such study.")
    access = StudyAccess(study=study, role=role)
    if not access.can(permission):
        raise Forbidden(f"Your role in this study ({role.value}) does not allow this.")
    return access


async def require_study_of(
    db: AsyncSession, principal: Principal, study_id: uuid.UUID, permission: str, *, thing: str
) -> StudyAccess:
    """For something inside a study: in a study you do not belong to, the thing itself does
    not exist, so the 404 names it rather than the study."""
    try:
        return await require_study(db, principal, study_id, permission)
    except NotFound:
        raise NotFound(f"No such {thing}.") from None
