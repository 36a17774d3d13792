from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from server.audit import service as audit
from server.audit.models import AuditAction
from server.auth.deps import CurrentAdmin, CurrentPrincipal
from server.core.db import DBSession
from server.studies import service
from server.studies.access import Membership, membership_of
from server.studies.deps import StudyConfigurer, StudyReader
from server.studies.schemas import (
    MemberCreate,
    MemberRead,
    MemberUpdate,
    SiteCreate,
    SiteRead,
    SiteUpdate,
    StudyCreate,
    StudyRead,
    StudyUpdate,
)

router = APIRouter(prefix="/api/studies", tags=["studies"])


@router.post("", response_model=StudyRead, status_code=status.HTTP_201_CREATED)
async def create_study(study_in: StudyCreate, db: DBSession, _: CurrentAdmin) -> StudyRead:
    return StudyRead.model_validate(await service.create_study(db, study_in=study_in))


@router.get("", response_model=list[StudyRead])
async def list_studies(db: DBSession, principal: CurrentPrincipal) -> list[StudyRead]:
    return [StudyRead.model_validate(s) for s in await service.list_studies(db, principal)]


@router.get("/{study_id}", response_model=StudyRead)
async def get_study(access: StudyReader) -> StudyRead:
    return StudyRead.model_validate(access.study)


@router.patch("/{study_id}", response_model=StudyRead)
async def update_study(study_in: StudyUpdate, access: StudyConfigurer, db: DBSession) -> StudyRead:
    study = await service.update_study(db, study=access.study, study_in=study_in)
    return StudyRead.model_validate(study)


@router.get("/{study_id}/sites", response_model=list[SiteRead])
async def list_sites(access: StudyReader, db: DBSession) -> list[SiteRead]:
    sites = await service.list_sites(db, study_id=access.study.id, scope=access.sites)
    return [SiteRead.model_validate(s) for s in sites]


@router.post("/{study_id}/sites", response_model=SiteRead, status_code=status.HTTP_201_CREATED)
async def create_site(site_in: SiteCreate, access: StudyConfigurer, db: DBSession) -> SiteRead:
    site = await service.create_site(db, study_id=access.study.id, site_in=site_in)
    return SiteRead.model_validate(site)


@router.get("/{study_id}/sites/{site_id}", response_model=SiteRead)
async def get_site(site_id: uuid.UUID, access: StudyReader, db: DBSession) -> SiteRead:
    site = await service.get_site(db, study_id=access.study.id, site_id=site_id, scope=access.sites)
    return SiteRead.model_validate(site)


@router.patch("/{study_id}/sites/{site_id}", response_model=SiteRead)
async def update_site(
    site_id: uuid.UUID, site_in: SiteUpdate, access: StudyConfigurer, db: DBSession
) -> SiteRead:
    site = await service.get_site(db, study_id=access.study.id, site_id=site_id, scope=access.sites)
    return SiteRead.model_validate(await service.update_site(db, site=site, site_in=site_in))


@router.get("/{study_id}/members", response_model=list[MemberRead])
async def list_members(access: StudyReader, db: DBSession) -> list[MemberRead]:
    return await service.list_members(db, study_id=access.study.id)


@router.post("/{study_id}/members", response_model=MemberRead, status_code=status.HTTP_201_CREATED)
async def add_member(member_in: MemberCreate, access: StudyConfigurer, db: DBSession) -> MemberRead:
    member = await service.add_member(db, study_id=access.study.id, member_in=member_in)
    await audit.record(
        db,
        action=AuditAction.membership_added,
        object_type="membership",
        object_id=member.user_id,
        study_id=access.study.id,
        summary={"role": member.role.value, "site_ids": sorted(map(str, member.site_ids))},
    )
    return member


@router.patch("/{study_id}/members/{user_id}", response_model=MemberRead)
async def update_member(
    user_id: uuid.UUID, member_in: MemberUpdate, access: StudyConfigurer, db: DBSession
) -> MemberRead:
    before = await membership_of(db, study_id=access.study.id, user_id=user_id)
    member = await service.update_member(
        db, study_id=access.study.id, user_id=user_id, member_in=member_in
    )
    await audit.record(
        db,
        action=AuditAction.membership_role_changed,
        object_type="membership",
        object_id=user_id,
        study_id=access.study.id,
        summary={
            "from": before.role.value if before else None,
            "to": member.role.value,
            "site_ids_from": _site_ids(before),
            "site_ids_to": sorted(map(str, member.site_ids)),
        },
    )
    return member


@router.delete("/{study_id}/members/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_member(user_id: uuid.UUID, access: StudyConfigurer, db: DBSession) -> None:
    before = await membership_of(db, study_id=access.study.id, user_id=user_id)
    await service.remove_member(db, study_id=access.study.id, user_id=user_id)
    await audit.record(
        db,
        action=AuditAction.membership_removed,
        object_type="membership",
        object_id=user_id,
        study_id=access.study.id,
        summary={"role": before.role.value if before else None, "site_ids": _site_ids(before)},
    )


def _site_ids(membership: Membership | None) -> list[str]:
    """A membership's sites for an audit summary; empty for the whole study (or no membership)."""
    if membership is None or membership.sites.site_ids is None:
        return []
    return sorted(map(str, membership.sites.site_ids))
