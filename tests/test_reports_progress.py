"""The study progress report: its counts against the database (enrolment, visits completed
and missed per site and visit, sessions, REDCap sync and reminder failures with their most
common reasons, never an address), and a new report when a reminder's outcome changes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from httpx import AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.assessment_sessions.models import AssessmentSession, SessionStatus
from server.core.config import Settings
from server.participants.models import Participant, ParticipantStatus
from server.redcap.models import RedcapSyncState, SyncStatus
from server.reminders.models import Channel, MessageKind, MessageStatus, ReminderMessage
from server.schedules.models import ScheduleVisit, VisitOccurrence, VisitStatus
from server.studies.models import StudyRole
from server.submissions.models import Submission
from tests import factories
from tests import report_factories as rf
from tests.report_helpers import ask, built_pdf, staff, text_of

S = VisitStatus
BOUNCE = "550 5.1.1 <never.in.reports@example.org>: Recipient address rejected"
UNSUBSCRIBED = "21610 Attempt to send to unsubscribed recipient +1 555 000 1111"


def plan(*statuses: VisitStatus) -> list[tuple[str, VisitStatus]]:
    labels = ("Baseline", "Week 2", "Week 4", "Week 6", "Week 8")
    return list(zip(labels, statuses, strict=True))


def stale(minute: int) -> str:
    due, found = f"2026-03-02T09:{minute:02d}:00+00:00", "2026-03-02T16:00:00+00:00"
    return f"Stale: due {due}, found {found}; not sent late."


def message(p: Participant, status: MessageStatus, error: str | None) -> ReminderMessage:
    moment = datetime(2026, 3, 2, 9, tzinfo=UTC)
    return ReminderMessage(
        study_id=p.study_id,
        site_id=p.site_id,
        participant_id=p.id,
        occurrence_id=uuid.uuid4(),
        rule_id=uuid.uuid4(),
        channel=Channel.email,
        kind=MessageKind.reminder,
        moment=moment,
        send_at=moment,
        status=status,
        error=error,
    )


async def test_study_progress_counts_match_the_database(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    a, _ = await rf.scheduled_course(
        db,
        client,
        settings,
        plan(S.completed, S.completed, S.missed, S.open, S.upcoming),
    )
    study, battery = a.study, a.battery
    second = await factories.create_site(db, study, code="ZZZ")
    b, _ = await rf.scheduled_course(
        db,
        client,
        settings,
        plan(S.completed, S.skipped, S.missed, S.cancelled, S.upcoming),
        study=study,
        site=second,
        battery=battery,
        version=2,
        extra=(datetime(2026, 6, 1, 10, tzinfo=UTC),),
    )
    # On no schedule: both sessions are tied to no visit.
    await rf.course(db, client, settings, study=study, site=second, battery=battery, visits=2)
    for status in (ParticipantStatus.withdrawn, ParticipantStatus.active):
        p = await factories.create_participant(db, second)
        p.status = status
    db.add(
        AssessmentSession(
            id=uuid.uuid4(),
            participant_id=a.participant.id,
            study_id=study.id,
            battery_id=battery.id,
            status=SessionStatus.abandoned,
            client_started_at=datetime.now(UTC),
        )
    )
    refused = await db.scalar(
        select(Submission.id).where(Submission.participant_id == a.participant.id).limit(1)
    )
    db.add(
        RedcapSyncState(
            submission_id=refused, study_id=study.id, status=SyncStatus.failed, error="refused"
        )
    )
    pa, pb = a.participant, b.participant
    db.add_all(
        [
            message(pa, MessageStatus.failed, BOUNCE),
            message(pa, MessageStatus.failed, BOUNCE),
            message(pa, MessageStatus.skipped, stale(1)),
            message(pa, MessageStatus.skipped, stale(2)),
            message(pa, MessageStatus.sent, None),
            message(pb, MessageStatus.failed, UNSUBSCRIBED),
            message(pb, MessageStatus.cancelled, "withdrawn"),
        ]
    )
    await db.flush()
    _, viewer = await staff(db, settings, study, StudyRole.viewer)
    response = await ask(client, viewer, study.id, "study_progress", study.id)
    assert response.status_code == 202, response.text
    text = text_of(await built_pdf(client, db, settings, viewer, response.json()["id"]))
    assert "Not yet available" not in text
    # pypdf gives a table cell a line.
    lines = [line.strip() for line in text.splitlines()]
    failures = lines[
        lines.index("REDCap sync and reminder failures") : lines.index(
            "Most common reminder failure reasons"
        )
    ]

    def row(within: list[str], *cells: str, width: int) -> list[str]:
        n = len(cells)
        found = [
            within[i + n : i + n + width]
            for i in range(len(within))
            if tuple(within[i : i + n]) == cells
        ]
        assert len(found) == 1, (cells, found)
        return found[0]

    for site in (a.site, second):
        by_status = dict(
            (
                await db.execute(
                    select(Participant.status, func.count())
                    .where(Participant.site_id == site.id)
                    .group_by(Participant.status)
                )
            ).all()
        )
        expected = [str(by_status.get(s, 0)) for s in ("enrolled", "active", "completed")]
        expected += [str(by_status.get("withdrawn", 0)), str(sum(by_status.values()))]
        assert lines[lines.index(site.code) + 1 : lines.index(site.code) + 6] == expected

        # Per visit label: occurrences by status, cancelled ones not counted.
        counted = (
            await db.execute(
                select(ScheduleVisit.label, VisitOccurrence.status, func.count())
                .join(ScheduleVisit, ScheduleVisit.id == VisitOccurrence.visit_id)
                .join(Participant, Participant.id == VisitOccurrence.participant_id)
                .where(Participant.site_id == site.id, VisitOccurrence.status != S.cancelled)
                .group_by(ScheduleVisit.label, VisitOccurrence.status)
            )
        ).all()
        labels = {label for label, _, _ in counted}
        assert labels == {"Baseline", "Week 2", "Week 4", "Week 8"} | (
            {"Week 6"} if site == a.site else set()
        )
        for label in labels:
            want = [
                str(sum(n for lab, st, n in counted if lab == label and st == status))
                for status in ("completed", "missed", "skipped", "open", "upcoming")
            ]
            assert row(lines, site.code, label, width=5) == want, (site.code, label)

        failed_sync = await db.scalar(
            select(func.count())
            .select_from(RedcapSyncState)
            .join(Submission, Submission.id == RedcapSyncState.submission_id)
            .join(Participant, Participant.id == Submission.participant_id)
            .where(Participant.site_id == site.id, RedcapSyncState.status == SyncStatus.failed)
        )
        reminders = dict(
            (
                await db.execute(
                    select(ReminderMessage.status, func.count())
                    .join(Participant, Participant.id == ReminderMessage.participant_id)
                    .where(Participant.site_id == site.id)
                    .group_by(ReminderMessage.status)
                )
            ).all()
        )
        assert row(failures, site.code, width=3) == [
            str(failed_sync),
            str(reminders.get(MessageStatus.failed, 0)),
            str(reminders.get(MessageStatus.skipped, 0)),
        ]
    assert row(failures, a.site.code, width=3) == ["1", "2", "2"]
    assert row(failures, second.code, width=3) == ["0", "1", "0"]
    # Sessions: completed, tied to no visit, abandoned.
    sessions = lines[lines.index("Sessions") : lines.index("REDCap sync and reminder failures")]
    assert row(sessions, a.site.code, width=3) == ["2", "0", "1"]
    assert row(sessions, second.code, width=3) == ["4", "3", "0"]

    # The most common reasons, grouped (two stale notes of different moments are one reason),
    # with their counts; never an address or a number.
    reasons = lines[lines.index("Most common reminder failure reasons") :]
    bounce = "550 5.1.1 <[address]>: Recipient address rejected"
    assert row(reasons, a.site.code, "failed", bounce, width=1) == ["2"]
    assert row(reasons, a.site.code, "skipped", width=2) == [
        "Stale: due [time], found [time]; not sent late.",
        "2",
    ]
    assert row(reasons, second.code, "failed", width=2) == [
        "21610 Attempt to send to unsubscribed recipient [number]",
        "1",
    ]
    assert "never.in.reports" not in text and "555 000" not in text


async def test_a_reminders_new_outcome_builds_a_new_progress_report(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    course, _ = await rf.scheduled_course(db, client, settings, [("Baseline", S.missed)])
    failed = message(course.participant, MessageStatus.failed, BOUNCE)
    db.add(failed)
    await db.flush()
    _, headers = await staff(db, settings, course.study)
    first = await ask(client, headers, course.study.id, "study_progress", course.study.id)
    assert first.status_code == 202
    again = await ask(client, headers, course.study.id, "study_progress", course.study.id)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    # Sent again by a coordinator, and delivered: no failure left to show.
    failed.status, failed.error = MessageStatus.delivered, None
    await db.flush()
    resent = await ask(client, headers, course.study.id, "study_progress", course.study.id)
    assert resent.status_code == 202 and resent.json()["id"] != first.json()["id"]
    text = text_of(await built_pdf(client, db, settings, headers, resent.json()["id"]))
    assert "Recipient address rejected" not in text
    same = await ask(client, headers, course.study.id, "study_progress", course.study.id)
    assert same.status_code == 200 and same.json()["id"] == resent.json()["id"]
