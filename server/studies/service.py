"""Studies, their sites and their members."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.auth.deps import Principal
from server.core.errors import Conflict, NotFound, Unprocessable
from server.studies.access import SiteScope
from server.studies.models import Site, Study, StudyMembership, StudyMembershipSite
from server.studies.schemas import (
    MemberCreate,
    MemberRead,
    MemberUpdate,
    SiteCreate,
    SiteUpdate,
    StudyCreate,
    StudyUpdate,
)
from server.users.models import User


async def create_study(db: AsyncSession, *, study_in: StudyCreate) -> Study:
    if await db.scalar(select(Study.id).where(Study.code == study_in.code)) is not None:
        raise Conflict("A study with this code already exists.", error_code="study_code_taken")
    study = Study(**study_in.model_dump())
    db.add(study)
    await db.flush()
    return study


async def list_studies(db: AsyncSession, principal: Principal) -> list[Study]:
    query = select(Study).order_by(Study.code)
    if not principal.is_admin:
        query = query.join(StudyMembership, StudyMembership.study_id == Study.id).where(
            StudyMembership.user_id == principal.user.id
        )
    return list((await db.execute(query)).scalars())


async def update_study(db: AsyncSession, *, study: Study, study_in: StudyUpdate) -> Study:
    for field, value in study_in.model_dump(exclude_unset=True, exclude_none=True).items():
        setattr(study, field, value)
    await db.flush()
    return study


async def list_sites(db: AsyncSession, *, study_id: uuid.UUID, scope: SiteScope) -> list[Site]:
    query = scope.filter(select(Site).where(Site.study_id == study_id), Site.id)
    return list((await db.execute(query.order_by(Site.code))).scalars())


async def get_site(
    db: AsyncSession, *, study_id: uuid.UUID, site_id: uuid.UUID, scope: SiteScope
) -> Site:
    site = await db.get(Site, site_id)
    if site is None or site.study_id != study_id or not scope.covers(site.id):
        raise NotFound("No such site in this study.")
    return site


async def create_site(db: AsyncSession, *, study_id: uuid.UUID, site_in: SiteCreate) -> Site:
    taken = await db.scalar(
        select(Site.id).where(Site.study_id == study_id, Site.code == site_in.code)
    )
    if taken is not None:
        raise Conflict(
            "This study already has a site with this code.", error_code="site_code_taken"
        )
    site = Site(study_id=study_id, **site_in.model_dump())
    db.add(site)
    await db.flush()
    return site


async def update_site(db: AsyncSession, *, site: Site, site_in: SiteUpdate) -> Site:
    for field, value in site_in.model_dump(exclude_unset=True, exclude_none=True).items():
        setattr(site, field, value)
    await db.flush()
    return site


def _member_read(
    membership: StudyMembership, user: User, site_ids: Iterable[uuid.UUID]
) -> MemberRead:
    return MemberRead(
        user_id=user.id,
        study_id=membership.study_id,
        role=membership.role,
        site_ids=sorted(site_ids),
        email=user.email,
        display_name=user.display_name,
    )


async def _sites_of(db: AsyncSession, *, study_id: uuid.UUID) -> dict[uuid.UUID, list[uuid.UUID]]:
    """Each site-scoped membership of the study: its sites."""
    rows = await db.execute(
        select(StudyMembershipSite.membership_id, StudyMembershipSite.site_id)
        .join(StudyMembership, StudyMembership.id == StudyMembershipSite.membership_id)
        .where(StudyMembership.study_id == study_id)
    )
    sites: dict[uuid.UUID, list[uuid.UUID]] = {}
    for membership_id, site_id in rows:
        sites.setdefault(membership_id, []).append(site_id)
    return sites


async def _check_sites(
    db: AsyncSession, *, study_id: uuid.UUID, site_ids: list[uuid.UUID]
) -> set[uuid.UUID]:
    """The ids as a set; any that is not a site of this study is named in a 422."""
    wanted = set(site_ids)
    if not wanted:
        return wanted
    found = set(
        await db.scalars(select(Site.id).where(Site.study_id == study_id, Site.id.in_(wanted)))
    )
    missing = [i for i, site_id in enumerate(site_ids) if site_id not in found]
    if missing:
        raise Unprocessable(
            "A member can only be limited to sites of this study.",
            details=[
                {"loc": ["body", "site_ids", i], "msg": "no such site in this study"}
                for i in missing
            ],
        )
    return wanted


async def _set_sites(
    db: AsyncSession, *, membership: StudyMembership, site_ids: set[uuid.UUID]
) -> None:
    await db.execute(
        delete(StudyMembershipSite).where(StudyMembershipSite.membership_id == membership.id)
    )
    db.add_all(StudyMembershipSite(membership_id=membership.id, site_id=s) for s in site_ids)
    await db.flush()


async def list_members(db: AsyncSession, *, study_id: uuid.UUID) -> list[MemberRead]:
    result = await db.execute(
        select(StudyMembership, User)
        .join(User, User.id == StudyMembership.user_id)
        .where(StudyMembership.study_id == study_id)
        .order_by(User.email)
    )
    sites = await _sites_of(db, study_id=study_id)
    return [_member_read(m, u, sites.get(m.id, [])) for m, u in result]


async def add_member(
    db: AsyncSession, *, study_id: uuid.UUID, member_in: MemberCreate
) -> MemberRead:
    user = await db.get(User, member_in.user_id)
    if user is None or not user.is_active:
        raise Unprocessable(
            "No active user with this id.",
            details=[{"loc": ["body", "user_id"], "msg": "unknown or disabled user"}],
        )
    site_ids = await _check_sites(db, study_id=study_id, site_ids=member_in.site_ids)
    existing = await db.scalar(
        select(StudyMembership.id).where(
            StudyMembership.study_id == study_id, StudyMembership.user_id == user.id
        )
    )
    if existing is not None:
        raise Conflict("This user is already a member of the study.", error_code="already_member")
    membership = StudyMembership(study_id=study_id, user_id=user.id, role=member_in.role)
    db.add(membership)
    await db.flush()
    await _set_sites(db, membership=membership, site_ids=site_ids)
    return _member_read(membership, user, site_ids)


async def _membership(
    db: AsyncSession, *, study_id: uuid.UUID, user_id: uuid.UUID
) -> StudyMembership:
    membership = await db.scalar(
        select(StudyMembership).where(
            StudyMembership.study_id == study_id, StudyMembership.user_id == user_id
        )
    )
    if membership is None:
        raise NotFound("This user is not a member of the study.")
    return membership


async def update_member(
    db: AsyncSession, *, study_id: uuid.UUID, user_id: uuid.UUID, member_in: MemberUpdate
) -> MemberRead:
    membership = await _membership(db, study_id=study_id, user_id=user_id)
    if member_in.site_ids is not None:
        site_ids = await _check_sites(db, study_id=study_id, site_ids=member_in.site_ids)
        await _set_sites(db, membership=membership, site_ids=site_ids)
    if member_in.role is not None:
        membership.role = member_in.role
    await db.flush()
    sites = await _sites_of(db, study_id=study_id)
    return _member_read(membership, await db.get_one(User, user_id), sites.get(membership.id, []))


async def remove_member(db: AsyncSession, *, study_id: uuid.UUID, user_id: uuid.UUID) -> None:
    membership = await _membership(db, study_id=study_id, user_id=user_id)
    await db.delete(membership)
    await db.flush()


async def add_membership(
    db: AsyncSession,
    *,
    study_id: uuid.UUID,
    user_id: uuid.UUID,
    role: str,
    site_ids: Iterable[uuid.UUID] = (),
) -> StudyMembership:
    """Used by the CLI and demo seed, where the caller has already checked the user and sites."""
    membership = StudyMembership(study_id=study_id, user_id=user_id, role=role)
    db.add(membership)
    await db.flush()
    await _set_sites(db, membership=membership, site_ids=set(site_ids))
    return membership
