"""Who may do what in a study, and at which of its sites.

Not a member: the study does not exist for you (404). A member limited to some sites
(StudyMembershipSite rows) sees only those sites: another site's participant, session or
submission is as absent as another study's (404), and every list and count goes through
SiteScope.filter. What concerns the whole study (its settings, sites, members, batteries,
REDCap connections) needs Permission.CONFIGURE, which a site-scoped member never has (403
site_scoped).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from server.auth.deps import Principal
from server.core.errors import Forbidden, NotFound
from server.studies.models import Study, StudyMembership, StudyMembershipSite, StudyRole

T = TypeVar("T")


class Permission:
    READ = "read"
    EXPORT = "export"
    MANAGE = "manage"  # participants: enrol, edit, contact details, access codes
    CONFIGURE = "configure"  # the whole study: settings, sites, members, batteries, REDCap


_GRANTS: dict[StudyRole, frozenset[str]] = {
    StudyRole.coordinator: frozenset(
        {Permission.READ, Permission.EXPORT, Permission.MANAGE, Permission.CONFIGURE}
    ),
    StudyRole.researcher: frozenset({Permission.READ, Permission.EXPORT}),
    StudyRole.viewer: frozenset({Permission.READ}),
}


@dataclass(frozen=True)
class SiteScope:
    """The sites of a study one may see: site_ids None for all of them."""

    site_ids: frozenset[uuid.UUID] | None = None

    @property
    def whole_study(self) -> bool:
        return self.site_ids is None

    def covers(self, site_id: uuid.UUID | None) -> bool:
        # A thing of no site (a study-wide REDCap connection) is the study's, so visible.
        return self.site_ids is None or site_id is None or site_id in self.site_ids

    def filter(
        self,
        query: Select[T],
        site_column: InstrumentedAttribute[Any],
        *,
        study_wide_too: bool = False,
    ) -> Select[T]:
        """The query limited to these sites (unchanged for the whole study); study_wide_too
        keeps the rows of no site (site_column NULL), which belong to the whole study."""
        if self.site_ids is None:
            return query
        covered = site_column.in_(sorted(self.site_ids))
        return query.where(or_(covered, site_column.is_(None)) if study_wide_too else covered)


WHOLE_STUDY = SiteScope()


@dataclass(frozen=True)
class StudyAccess:
    study: Study
    role: StudyRole | None  # None for a system admin who is not a member
    sites: SiteScope = field(default=WHOLE_STUDY)

    def can(self, permission: str) -> bool:
        if permission == Permission.CONFIGURE and not self.sites.whole_study:
            return False
        return self.role is None or permission in _GRANTS[self.role]


@dataclass(frozen=True)
class Membership:
    role: StudyRole
    sites: SiteScope


async def membership_of(
    db: AsyncSession, *, study_id: uuid.UUID, user_id: uuid.UUID
) -> Membership | None:
    """The role and the sites, in one round trip: a row per site (one with none if unscoped)."""
    rows = (
        await db.execute(
            select(StudyMembership.role, StudyMembershipSite.site_id)
            .outerjoin(StudyMembershipSite, StudyMembershipSite.membership_id == StudyMembership.id)
            .where(StudyMembership.study_id == study_id, StudyMembership.user_id == user_id)
        )
    ).all()
    if not rows:
        return None
    site_ids = frozenset(r.site_id for r in rows if r.site_id is not None)
    return Membership(role=rows[0].role, sites=SiteScope(site_ids or None))


async def _access(db: AsyncSession, principal: Principal, study_id: uuid.UUID) -> StudyAccess:
    study = await db.get(Study, study_id)
    if study is None:
        raise NotFound("No such study.")
    if principal.is_admin:
        return StudyAccess(study=study, role=None)
    membership = await membership_of(db, study_id=study_id, user_id=principal.user.id)
    if membership is None:
        raise NotFound("No such study.")
    return StudyAccess(study=study, role=membership.role, sites=membership.sites)


def _check(access: StudyAccess, permission: str) -> StudyAccess:
    if access.can(permission) or access.role is None:
        return access
    if permission == Permission.CONFIGURE and access.role == StudyRole.coordinator:
        raise Forbidden(
            "Your membership is limited to some of this study's sites; changing the whole "
            "study (its settings, sites, members, batteries, REDCap connections) needs a "
            "membership of the whole study.",
            error_code="site_scoped",
        )
    raise Forbidden(f"Your role in this study ({access.role.value}) does not allow this.")


async def require_study(
    db: AsyncSession, principal: Principal, study_id: uuid.UUID, permission: str
) -> StudyAccess:
    return _check(await _access(db, principal, study_id), permission)


async def require_study_of(
    db: AsyncSession,
    principal: Principal,
    study_id: uuid.UUID,
    permission: str,
    *,
    thing: str,
    site_id: uuid.UUID | None = None,
) -> StudyAccess:
    """For something inside a study (at site_id, for a participant's things): in a study you
    do not belong to, or at a site your membership does not cover, the thing itself does not
    exist, so the 404 names it rather than the study. The site is checked before the role,
    so that a 403 never tells a member that another site's thing exists."""
    try:
        access = await _access(db, principal, study_id)
    except NotFound:
        raise NotFound(f"No such {thing}.") from None
    if not access.sites.covers(site_id):
        raise NotFound(f"No such {thing}.")
    return _check(access, permission)
