"""PDF reports over HTTP: ask (202 queued, or 200 with the report already built for the same
request and data), read the status and a signed, expiring download link, download."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from server.audit import service as audit
from server.audit.models import AuditAction
from server.auth.deps import CurrentPrincipal
from server.core.config import AppSettings, Settings
from server.core.db import DBSession
from server.core.errors import Conflict, NotFound
from server.reports import service
from server.reports.deps import ReportStudy, ValidReport, check_kind
from server.reports.models import Report
from server.reports.schemas import ReportCreate, ReportRead

router = APIRouter(prefix="/api/reports", tags=["reports"])


async def _read(
    db: DBSession, settings: Settings, report: Report, principal: CurrentPrincipal, reused: bool
) -> ReportRead:
    state = await service.job_status(db, report)
    url, expires = None, None
    if report.built_at is not None:
        url, expires = service.download_link(settings, report.id, principal.user.id)
    return ReportRead(
        id=report.id,
        study_id=report.study_id,
        kind=report.kind,
        subject_id=report.subject_id,
        status=state,
        job_id=report.job_id,
        reused=reused,
        created_at=report.created_at,
        built_at=report.built_at,
        pages=report.pages,
        size_bytes=report.size_bytes,
        download_url=url,
        download_expires_at=expires,
    )


def _site(report: Report) -> uuid.UUID | None:
    """The audit entry's site: the report's one site, if it is of one."""
    return uuid.UUID(report.site_ids[0]) if report.site_ids and len(report.site_ids) == 1 else None


@router.post("", response_model=ReportRead, status_code=status.HTTP_202_ACCEPTED)
async def request_report(
    report_in: ReportCreate,
    access: ReportStudy,
    db: DBSession,
    principal: CurrentPrincipal,
    settings: AppSettings,
    response: Response,
) -> ReportRead:
    """202 with the queued job; 200 when the same report over the same data is built (or
    being built) already. Coordinators and researchers; viewers: study progress only."""
    subject = await service.resolve_subject(
        db, study_id=access.study.id, report_in=report_in, sites=access.sites
    )
    check_kind(access, report_in.kind)
    report, reused = await service.request(
        db,
        settings,
        study_id=access.study.id,
        report_in=report_in,
        subject=subject,
        user_id=principal.user.id,
    )
    if reused:
        response.status_code = status.HTTP_200_OK
    await audit.record(
        db,
        action=AuditAction.report_requested,
        object_type="report",
        object_id=report.id,
        study_id=report.study_id,
        site_id=_site(report),
        summary={"kind": report.kind.value, "reused": reused},
    )
    return await _read(db, settings, report, principal, reused)


@router.get("/{report_id}", response_model=ReportRead)
async def get_report(
    report: ValidReport, db: DBSession, principal: CurrentPrincipal, settings: AppSettings
) -> ReportRead:
    """Status, and once built a download link for the caller that expires."""
    return await _read(db, settings, report, principal, False)


@router.get("/{report_id}/download", response_class=Response)
async def download_report(
    report: ValidReport,
    db: DBSession,
    principal: CurrentPrincipal,
    settings: AppSettings,
    expires: Annotated[int, Query()],
    sig: Annotated[str, Query(max_length=128)],
) -> Response:
    """The PDF, with a link from GET /api/reports/{report_id} that is the caller's and not
    expired (404 otherwise, as for a report that does not exist)."""
    if not service.link_valid(settings, report.id, principal.user.id, expires, sig):
        raise NotFound("No such report link (it may have expired).")
    if report.built_at is None:
        state = await service.job_status(db, report)
        raise Conflict(f"The report is not built yet ({state}).", error_code="report_not_ready")
    pdf = await service.pdf_of(db, report)
    await audit.record(
        db,
        action=AuditAction.report_downloaded,
        object_type="report",
        object_id=report.id,
        study_id=report.study_id,
        site_id=_site(report),
        summary={"kind": report.kind.value, "size_bytes": report.size_bytes},
    )
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="report-{report.id}.pdf"'},
    )
