"""PDF reports: the values, reliable-change marks and flags a participant's report holds
(read back with pypdf, computed here from the seeded trials), reuse for unchanged data, and
who may ask for and read which report. Here the participant is on no visit schedule (visits
are their completed sessions); schedules are in test_reports_visits.py, study progress in
test_reports_progress.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from httpx import AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit.models import AuditEntry
from server.core.config import Settings
from server.reports import service
from server.reports.change import IMPROVED, WORSENED
from server.reports.models import Report
from server.scoring.models import QualityCheck
from server.studies.models import StudyRole
from tests import factories
from tests import report_factories as rf
from tests.report_helpers import MOOD, RT, ask, built_pdf, s_diff, staff, text_of


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
