"""valid_report_id: another study's report, or one about a site the member does not see,
answers 404; a viewer may read study progress reports only (403 on the others)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends

from server.auth.deps import CurrentPrincipal
from server.core.db import DBSession
from server.core.errors import Forbidden, NotFound
from server.reports.models import Report, ReportKind
from server.studies.access import Permission, StudyAccess, require_study, require_study_of


def permission_for(kind: ReportKind) -> str:
    """Participant and session reports are exports of a person's data; progress is counts."""
    return Permission.READ if kind == ReportKind.study_progress else Permission.EXPORT


def check_kind(access: StudyAccess, kind: ReportKind) -> None:
    if not access.can(permission_for(kind)):
        raise Forbidden("Your role in this study may read study progress reports only.")


async def valid_report_id(
    report_id: uuid.UUID, db: DBSession, principal: CurrentPrincipal
) -> Report:
    report = await db.get(Report, report_id)
    if report is None:
        raise NotFound("No such report.")
    sites = [uuid.UUID(s) for s in report.site_ids] if report.site_ids is not None else None
    access = await require_study_of(
        db,
        principal,
        report.study_id,
        Permission.READ,
        thing="report",
        site_id=sites[0] if sites else None,
    )
    # A report of several sites (or of the whole study) only for those who see all of them.
    covered = access.sites.whole_study if sites is None else all(map(access.sites.covers, sites))
    if not covered:
        raise NotFound("No such report.")
    check_kind(access, report.kind)
    return report


ValidReport = Annotated[Report, Depends(valid_report_id)]


async def report_study(
    study_id: uuid.UUID, db: DBSession, principal: CurrentPrincipal
) -> StudyAccess:
    """The study a report is asked for in; not a member: 404."""
    return await require_study(db, principal, study_id, Permission.READ)


ReportStudy = Annotated[StudyAccess, Depends(report_study)]
