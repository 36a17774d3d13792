"""PDF reports: the values, reliable-change marks and flags a participant's report holds
(read back with pypdf, computed here from the seeded trials), study progress counts against
the database, reuse for unchanged data, and who may ask for and read which report."""

from __future__ import annotations

import io
import math
import uuid
from datetime import UTC, datetime

import pypdf
from httpx import AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.assessment_sessions.models import AssessmentSession, SessionStatus
from server.audit.models import AuditEntry
from server.core.config import Settings
from server.participants.models import Participant, ParticipantStatus
from server.redcap.models import RedcapSyncState, SyncStatus
from server.reports import service
from server.reports.change import IMPROVED, WORSENED
from server.reports.models import Report
from server.scoring.models import QualityCheck
from server.studies.models import StudyRole
from server.submissions.models import Submission
from tests import factories
from tests import report_factories as rf

# The built-in modules' declared psychometrics (server/modules/builtin.py).
RT = {"r": 0.80, "sd": 50.0}
MOOD = {"r": 0.84, "sd": 5.0}


def s_diff(r: float, sd: float) -> float:
    return math.sqrt(2 * (sd * math.sqrt(1 - r)) ** 2)


def text_of(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() for page in reader.pages)


async def staff(db: AsyncSession, settings: Settings, study, role=StudyRole.coordinator, sites=()):
    user = await factories.create_user(db)
    await factories.add_member(db, study, user, role, sites=sites)
    return user, await factories.auth_headers(db, settings, user)


async def ask(client: AsyncClient, headers, study_id, kind, subject_id, **options):
    return await client.post(
        "/api/reports",
        params={"study_id": str(study_id)},
        json={"kind": kind, "subject_id": str(subject_id), **options},
        headers=headers,
    )


async def built_pdf(client, db, settings, headers, report_id) -> bytes:
    """The worker's part (what workers.tasks.reports runs), then the download link."""
    await service.build(db, settings, uuid.UUID(report_id))
    read = (await client.get(f"/api/reports/{report_id}", headers=headers)).json()
    assert read["status"] == "succeeded" and read["download_url"], read
    assert "P-" not in read["download_url"]  # ids only in the link
    response = await client.get(read["download_url"], headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    return response.content


async def test_participant_report_holds_values_marks_and_flags(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    course = await rf.course(db, client, settings)
    _, headers = await staff(db, settings, course.study)
    response = await ask(client, headers, course.study.id, "participant", course.participant.id)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued" and response.json()["job_id"]
    pdf = await built_pdf(client, db, settings, headers, response.json()["id"])
    text = text_of(pdf)

    assert course.participant.participant_code in text
    assert "never.in.reports" not in text and "5550001111" not in text
    assert "Page 1" in text and "Metricis 0.1.0" in text

    base_rt, base_mood = rf.mean_rt(course.rts[0]), rf.mood_total(course.moods[0])
    marks = []
    for n, (rts, codes) in enumerate(zip(course.rts, course.moods, strict=True)):
        mean = rf.mean_rt(rts)
        assert f"{mean:.1f}" in text, (n, mean)
        total = rf.mood_total(codes)
        assert str(total) in text
        if n == 0:
            continue
        rci = (mean - base_rt) / s_diff(RT["r"], RT["sd"])
        # Higher RT is worse: a reliable rise is a deterioration.
        mark = WORSENED if rci > 1.96 else IMPROVED if rci < -1.96 else ""
        assert f"{mean - base_rt:+.2f} ({rci:+.2f}) {mark}".rstrip() in text
        marks.append(mark)
        mrci = (total - base_mood) / s_diff(MOOD["r"], MOOD["sd"])
        mmark = WORSENED if mrci > 1.96 else IMPROVED if mrci < -1.96 else ""
        assert f"{total - base_mood:+.2f} ({mrci:+.2f}) {mmark}".rstrip() in text
        marks.append(mmark)
    # The seeded course has both kinds of reliable change, and changes that are not reliable.
    assert WORSENED in marks and IMPROVED in marks and "" in marks

    fired = (
        await db.scalars(
            select(QualityCheck.rule).where(
                QualityCheck.session_id.in_([s.id for s in course.sessions]), QualityCheck.fired
            )
        )
    ).all()
    assert "omissions" in fired  # visit 3's lapses
    for rule in set(fired):
        assert rule in text

    actions = (
        await db.scalars(
            select(AuditEntry.action).where(AuditEntry.object_id == response.json()["id"])
        )
    ).all()
    assert set(actions) == {"report_requested", "report_downloaded"}


async def test_unchanged_data_reuses_the_report_and_new_data_builds_anew(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    course = await rf.course(db, client, settings, visits=2)
    _, headers = await staff(db, settings, course.study, StudyRole.researcher)
    first = await ask(client, headers, course.study.id, "participant", course.participant.id)
    assert first.status_code == 202
    again = await ask(client, headers, course.study.id, "participant", course.participant.id)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert again.json()["reused"] is True
    await service.build(db, settings, uuid.UUID(first.json()["id"]))
    built = await ask(client, headers, course.study.id, "participant", course.participant.id)
    assert built.status_code == 200 and built.json()["download_url"]
    # Other options are another report.
    other = await ask(
        client,
        headers,
        course.study.id,
        "participant",
        course.participant.id,
        metrics=["mean_rt_ms"],
    )
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]

    # A date range is another input too: here only the second visit (2026-03-16).
    ranged = await ask(
        client,
        headers,
        course.study.id,
        "participant",
        course.participant.id,
        since="2026-03-10",
        until="2026-04-01",
    )
    assert ranged.status_code == 202
    text = text_of(await built_pdf(client, db, settings, headers, ranged.json()["id"]))
    assert "1 visits, 2026-03-16 to 2026-03-16" in text
    assert f"{rf.mean_rt(rf.RTS[0]):.1f}" not in text

    await rf.add_visit(
        db, client, settings, course, rf.RTS[3], rf.MOODS[3], when=datetime(2026, 5, 1, tzinfo=UTC)
    )
    fresh = await ask(client, headers, course.study.id, "participant", course.participant.id)
    assert fresh.status_code == 202 and fresh.json()["id"] != first.json()["id"]
    text = text_of(await built_pdf(client, db, settings, headers, fresh.json()["id"]))
    assert f"{rf.mean_rt(rf.RTS[3]):.1f}" in text
    assert (
        await db.scalar(
            select(func.count()).select_from(Report).where(Report.study_id == course.study.id)
        )
        == 4
    )


async def test_session_report(client: AsyncClient, db: AsyncSession, settings: Settings) -> None:
    course = await rf.course(db, client, settings, visits=3)
    _, headers = await staff(db, settings, course.study)
    flagged = course.sessions[2]
    response = await ask(client, headers, course.study.id, "session", flagged.id)
    assert response.status_code == 202, response.text
    text = text_of(await built_pdf(client, db, settings, headers, response.json()["id"]))
    assert "Session report" in text and "omissions" in text
    assert f"{rf.mean_rt(course.rts[2]):.1f}" in text
    assert f"{rf.mean_rt(course.rts[0]):.1f}" not in text


async def test_study_progress_counts_match_the_database(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    course = await rf.course(db, client, settings, visits=3)
    second = await factories.create_site(db, course.study, code="ZZZ")
    await rf.course(
        db, client, settings, study=course.study, site=second, battery=course.battery, visits=2
    )
    for status in (ParticipantStatus.withdrawn, ParticipantStatus.active):
        p = await factories.create_participant(db, second)
        p.status = status
    db.add(
        AssessmentSession(
            id=uuid.uuid4(),
            participant_id=course.participant.id,
            study_id=course.study.id,
            battery_id=course.battery.id,
            status=SessionStatus.abandoned,
            client_started_at=datetime.now(UTC),
        )
    )
    await db.flush()
    # One submission of the first site REDCap refused.
    refused = await db.scalar(
        select(Submission.id).where(Submission.participant_id == course.participant.id).limit(1)
    )
    db.add(
        RedcapSyncState(
            submission_id=refused,
            study_id=course.study.id,
            status=SyncStatus.failed,
            error="refused",
        )
    )
    await db.flush()
    _, viewer = await staff(db, settings, course.study, StudyRole.viewer)
    response = await ask(client, viewer, course.study.id, "study_progress", course.study.id)
    assert response.status_code == 202, response.text
    text = text_of(await built_pdf(client, db, settings, viewer, response.json()["id"]))

    # pypdf gives a table cell a line: a site's rows are the lines after its code, in the
    # enrolment, visits and REDCap tables in that order.
    lines = [line.strip() for line in text.splitlines()]

    def rows(code: str, width: int) -> list[list[str]]:
        return [lines[i + 1 : i + 1 + width] for i, x in enumerate(lines) if x == code]

    for site in (course.site, second):
        by_status = dict(
            (
                await db.execute(
                    select(Participant.status, func.count())
                    .where(Participant.site_id == site.id)
                    .group_by(Participant.status)
                )
            ).all()
        )
        expected = [
            str(by_status.get(s, 0)) for s in ("enrolled", "active", "completed", "withdrawn")
        ]
        enrolment, visits, sync = rows(site.code, 5)
        assert enrolment == [*expected, str(sum(by_status.values()))], site.code
        # Visit n: participants of the site with at least n completed sessions; abandoned.
        per_participant = (
            (
                await db.execute(
                    select(func.count())
                    .select_from(AssessmentSession)
                    .join(Participant, Participant.id == AssessmentSession.participant_id)
                    .where(Participant.site_id == site.id, AssessmentSession.status == "completed")
                    .group_by(AssessmentSession.participant_id)
                )
            )
            .scalars()
            .all()
        )
        abandoned = await db.scalar(
            select(func.count())
            .select_from(AssessmentSession)
            .join(Participant, Participant.id == AssessmentSession.participant_id)
            .where(Participant.site_id == site.id, AssessmentSession.status == "abandoned")
        )
        completed = [str(sum(1 for n in per_participant if n >= v)) for v in (1, 2, 3)]
        assert visits[:4] == [*completed, str(abandoned)], site.code
        failed = await db.scalar(
            select(func.count())
            .select_from(RedcapSyncState)
            .join(Submission, Submission.id == RedcapSyncState.submission_id)
            .join(Participant, Participant.id == Submission.participant_id)
            .where(Participant.site_id == site.id, RedcapSyncState.status == SyncStatus.failed)
        )
        assert sync[0] == str(failed)
    assert rows(course.site.code, 1)[2] == ["1"]
    assert rows(course.site.code, 4)[1] == ["1", "1", "1", "1"]
    assert rows(second.code, 4)[1] == ["1", "1", "0", "0"]
    assert "REDCap sync failures" in text
    assert "Not yet available" in text


async def test_roles_studies_and_sites(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    course = await rf.course(db, client, settings, visits=1)
    other_site = await factories.create_site(db, course.study, code="OTH")
    other = await rf.course(
        db, client, settings, study=course.study, site=other_site, battery=course.battery, visits=1
    )
    study_id, pid = course.study.id, course.participant.id
    _, viewer = await staff(db, settings, course.study, StudyRole.viewer)
    _, scoped = await staff(db, settings, course.study, sites=[course.site])
    _, coordinator = await staff(db, settings, course.study)
    elsewhere = await factories.create_study(db)
    _, outsider = await staff(db, settings, elsewhere)

    assert (await ask(client, viewer, study_id, "participant", pid)).status_code == 403
    assert (
        await ask(client, viewer, study_id, "session", course.sessions[0].id)
    ).status_code == 403
    assert (await ask(client, outsider, study_id, "participant", pid)).status_code == 404
    assert (await ask(client, outsider, elsewhere.id, "participant", pid)).status_code == 404
    assert (
        await ask(client, scoped, study_id, "participant", other.participant.id)
    ).status_code == 404
    mine = await ask(client, scoped, study_id, "participant", pid)
    assert mine.status_code == 202
    full = await ask(client, coordinator, study_id, "participant", other.participant.id)
    assert full.status_code == 202
    # The other site's report is not there for the site-scoped member, nor for outsiders.
    assert (
        await client.get(f"/api/reports/{full.json()['id']}", headers=scoped)
    ).status_code == 404
    assert (
        await client.get(f"/api/reports/{mine.json()['id']}", headers=outsider)
    ).status_code == 404
    assert (
        await client.get(f"/api/reports/{mine.json()['id']}", headers=viewer)
    ).status_code == 403
    # A site-scoped member's progress report covers their sites; the whole study's is not theirs.
    progress = await ask(client, scoped, study_id, "study_progress", study_id)
    assert progress.status_code == 202
    report = await db.get(Report, uuid.UUID(progress.json()["id"]))
    assert report is not None and report.site_ids == [str(course.site.id)]
    whole = await ask(client, coordinator, study_id, "study_progress", study_id)
    assert (
        await client.get(f"/api/reports/{whole.json()['id']}", headers=scoped)
    ).status_code == 404
    text = text_of(await built_pdf(client, db, settings, scoped, progress.json()["id"]))
    assert course.site.code in text and "OTH" not in text
    # The link is the caller's and expires.
    await service.build(db, settings, uuid.UUID(mine.json()["id"]))
    link = (await client.get(f"/api/reports/{mine.json()['id']}", headers=scoped)).json()
    url = link["download_url"]
    assert (await client.get(url, headers=coordinator)).status_code == 404
    expired = url.replace("expires=", "expires=1").split("&sig")[0] + "&sig=" + "0" * 64
    assert (await client.get(expired, headers=scoped)).status_code == 404
    assert (await client.get(url, headers=scoped)).status_code == 200
