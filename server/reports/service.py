"""Reports: asked for (keyed, reused or queued), built by the worker, downloaded by a link.

A request reads the data the report would show (one query), and its key is a hash of the
request and of that data: the same key finds the report already built (or building), new data
is a new key and a new build. Building is the `reports.build` outbox job. Services flush,
never commit.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.assessment_sessions.models import AssessmentSession
from server.core.config import Settings
from server.core.errors import NotFound
from server.core.models import utcnow
from server.outbox import service as outbox
from server.outbox.models import JobStatus, OutboxEvent
from server.outbox.topics import REPORTS_BUILD
from server.participants.models import Participant
from server.reports import data, data_progress, data_visits
from server.reports.document import ModuleInfo, Options
from server.reports.models import Report, ReportKind
from server.reports.schemas import ReportCreate
from server.studies.access import SiteScope

# Part of every key: a change to what a report shows builds new ones.
LAYOUT_VERSION = "2"  # 2: visits from the schedules; reminder failures


@dataclass(frozen=True)
class Subject:
    participant_id: uuid.UUID | None
    session_id: uuid.UUID | None
    site_ids: list[uuid.UUID] | None  # what the report covers; None: the whole study


async def resolve_subject(
    db: AsyncSession, *, study_id: uuid.UUID, report_in: ReportCreate, sites: SiteScope
) -> Subject:
    """The participant (and session) the report is about, at a site the caller sees; 404
    otherwise, as for any other route on another site's or study's participant."""
    if report_in.kind == ReportKind.study_progress:
        if report_in.subject_id != study_id:
            raise NotFound("No such study.")
        ids = None if sites.site_ids is None else sorted(sites.site_ids)
        return Subject(None, None, ids)
    session_id = None
    participant_id = report_in.subject_id
    if report_in.kind == ReportKind.session:
        session = await db.get(AssessmentSession, report_in.subject_id)
        if session is None or session.study_id != study_id:
            raise NotFound("No such session.")
        session_id, participant_id = session.id, session.participant_id
    participant = await db.get(Participant, participant_id)
    if (
        participant is None
        or participant.study_id != study_id
        or not sites.covers(participant.site_id)
    ):
        raise NotFound(f"No such {report_in.kind.value}.")
    return Subject(participant_id, session_id, [participant.site_id])


def _options(report_in: ReportCreate) -> dict[str, Any]:
    return {
        "metrics": report_in.metrics,
        "since": None if report_in.since is None else report_in.since.isoformat(),
        "until": None if report_in.until is None else report_in.until.isoformat(),
    }


async def _data(db: AsyncSession, report: Report) -> Any:
    opts = report.options
    since = None if opts.get("since") is None else datetime.fromisoformat(opts["since"]).date()
    until = None if opts.get("until") is None else datetime.fromisoformat(opts["until"]).date()
    if report.kind == ReportKind.study_progress:
        sites = None if report.site_ids is None else [uuid.UUID(s) for s in report.site_ids]
        return await data_progress.progress_data(db, study_id=report.study_id, site_ids=sites)
    return await data.participant_data(
        db,
        study_id=report.study_id,
        participant_id=uuid.UUID(opts["participant_id"]),
        session_id=None if opts.get("session_id") is None else uuid.UUID(opts["session_id"]),
        since=since,
        until=until,
    )


async def request(
    db: AsyncSession,
    settings: Settings,
    *,
    study_id: uuid.UUID,
    report_in: ReportCreate,
    subject: Subject,
    user_id: uuid.UUID | None,
) -> tuple[Report, bool]:
    """The report for this request over the data as it is now: (report, reused). A new one
    is queued for the worker; one already built or building for the same key is reused."""
    options = {
        **_options(report_in),
        "participant_id": None if subject.participant_id is None else str(subject.participant_id),
        "session_id": None if subject.session_id is None else str(subject.session_id),
    }
    draft = Report(
        study_id=study_id,
        kind=report_in.kind,
        subject_id=report_in.subject_id,
        site_ids=None if subject.site_ids is None else [str(s) for s in subject.site_ids],
        options=options,
    )
    found = await _data(db, draft)
    if found is None:
        raise NotFound(f"No such {report_in.kind.value}.")
    key = data.digest_of(
        LAYOUT_VERSION,
        report_in.kind.value,
        str(report_in.subject_id),
        draft.site_ids,
        options,
        settings.REPORT_PAGE_SIZE,
        found.digest,
    )
    report_id = uuid.uuid4()
    inserted = await db.scalar(
        insert(Report)
        .values(
            id=report_id,
            study_id=study_id,
            kind=report_in.kind,
            subject_id=report_in.subject_id,
            site_ids=draft.site_ids,
            options=options,
            key=key,
            requested_by=user_id,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(constraint="uq_reports_study_id_key")
        .returning(Report.id)
    )
    report = await db.scalar(
        select(Report)
        .where(Report.study_id == study_id, Report.key == key)
        .execution_options(populate_existing=True)
    )
    assert report is not None
    if inserted is None:
        job = None if report.job_id is None else await db.get(OutboxEvent, report.job_id)
        if report.built_at is not None or (job is not None and job.status != JobStatus.failed):
            return report, True
    await _queue(db, report)
    return report, False


async def _queue(db: AsyncSession, report: Report) -> None:
    """The build job, with the report's own transaction; the report remembers its job."""
    event = outbox.Event(
        REPORTS_BUILD, {"report_id": str(report.id)}, subject_id=report.id, study_id=report.study_id
    )
    await outbox.add(db, [event])
    report.job_id = await db.scalar(
        select(OutboxEvent.id)
        .where(OutboxEvent.subject_id == report.id, OutboxEvent.finished_at.is_(None))
        .order_by(OutboxEvent.created_at.desc())
        .limit(1)
    )
    await db.flush()


async def modules_of(db: AsyncSession, visits: list[data_visits.Visit]) -> list[ModuleInfo]:
    """The modules the visits used, in their first visit's order, each described by the newest
    version the visits used."""
    newest: dict[str, int] = {}
    for visit in visits:
        for key, version in visit.versions.items():
            newest[key] = max(version, newest.get(key, 0))
    defs = await data.module_metrics(db, set(newest.items()))
    return [
        ModuleInfo(key, data.module_name(key), data.is_questionnaire(key), defs[(key, version)])
        for key, version in newest.items()
    ]


async def build(
    db: AsyncSession, settings: Settings, report_id: uuid.UUID, now: datetime | None = None
) -> str | None:
    """The worker's part: read, lay out, store the PDF. Idempotent: a built report is kept."""
    report = await db.get(Report, report_id, with_for_update=True)
    if report is None or report.built_at is not None:
        return None if report is None else f"report:{report.id}"
    # This transaction also marks the job succeeded (workers.protocol): lost in a crash, both
    # are lost together, the job runs again and builds the same report. So its commit need not
    # wait for the WAL flush, which on a busy disk is most of a build's database time.
    await db.execute(text("SET LOCAL synchronous_commit TO OFF"))
    # The layout, and with it reportlab, when a report is first built (server.reports.document).
    from server.reports import render, render_progress

    now = now or utcnow()
    found = await _data(db, report)
    options = Options(
        metrics=report.options.get("metrics"),
        generated_at=now,
        page_size=settings.REPORT_PAGE_SIZE,
    )
    if report.kind == ReportKind.study_progress:
        scope = "all sites" if report.site_ids is None else ", ".join(s.code for s in found.sites)
        built = render_progress.progress_report(found, options, scope)
    elif found is None:
        raise NotFound("The report's participant is gone.")
    else:
        modules = await modules_of(db, found.visits)
        make = (
            render.session_report
            if report.kind == ReportKind.session
            else (render.participant_report)
        )
        built = make(found, modules, options)
    report.pdf = built.pdf
    report.pages = built.pages
    report.size_bytes = len(built.pdf)
    report.built_at = now
    await db.flush()
    return f"report:{report.id}"


# --- download links: signed for one user, expiring; ids only --------------------------------


def _signature(settings: Settings, report_id: uuid.UUID, user_id: uuid.UUID, expires: int) -> str:
    secret = hashlib.sha256(b"report-link:" + settings.JWT_SECRET_KEY.get_secret_value().encode())
    message = f"{report_id}:{user_id}:{expires}".encode()
    return hmac.new(secret.digest(), message, hashlib.sha256).hexdigest()


def download_link(
    settings: Settings, report_id: uuid.UUID, user_id: uuid.UUID
) -> tuple[str, datetime]:
    expires = int(time.time()) + settings.REPORT_LINK_TTL_SECONDS
    sig = _signature(settings, report_id, user_id, expires)
    url = f"/api/reports/{report_id}/download?expires={expires}&sig={sig}"
    return url, datetime.fromtimestamp(expires, UTC)


def link_valid(
    settings: Settings, report_id: uuid.UUID, user_id: uuid.UUID, expires: int, sig: str
) -> bool:
    if expires < time.time():
        return False
    return hmac.compare_digest(sig, _signature(settings, report_id, user_id, expires))


async def job_status(db: AsyncSession, report: Report) -> JobStatus:
    if report.built_at is not None:
        return JobStatus.succeeded
    if report.job_id is None:
        return JobStatus.queued
    job = await db.get(OutboxEvent, report.job_id)
    return JobStatus.queued if job is None else job.status


async def pdf_of(db: AsyncSession, report: Report) -> bytes | None:
    return await db.scalar(select(Report.pdf).where(Report.id == report.id))
