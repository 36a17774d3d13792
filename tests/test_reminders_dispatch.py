"""The reminder dispatch tick under a chosen `now`: when each reminder falls due in the
participant's zone (across DST), quiet hours, staleness, exactly-once, withdrawal, opt-out,
missed visits and escalation. No sleeps: every tick is told the time."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.coordinator_tasks.models import CoordinatorTask
from server.outbox.models import OutboxEvent
from server.participants.models import Participant, ParticipantContact, ParticipantStatus
from server.reminders import dispatch
from server.reminders.models import (
    DispatchWatermark,
    MessageStatus,
    ReminderMessage,
    ReminderRule,
    Trigger,
)
from server.schedules.models import ScheduleVisit, VisitOccurrence, VisitStatus
from tests import factories
from tests import ingest_factories as ingest
from tests import schedule_factories as sched

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


async def _visit(db: AsyncSession, **rule: Any) -> tuple[Any, Any, ScheduleVisit, Any]:
    study = await factories.create_study(db)
    site = await factories.create_site(db, study)
    battery = await ingest.create_battery(db, study, await ingest.standard_modules(db))
    protocol, visits = await sched.create_protocol(
        db, study, battery, visits=[{"key": "week1", "offset_days": 7}]
    )
    db.add(ReminderRule(study_id=study.id, visit_id=visits[0].id, **rule))
    await db.flush()
    return study, site, visits[0], protocol


async def _participant(
    db: AsyncSession, site: Any, zone: ZoneInfo, *, email: bool = True, phone: bool = False
) -> Participant:
    participant = await factories.create_participant(
        db, site, email="p@example.org" if email else None, phone="+4930901820" if phone else None
    )
    participant.timezone = zone.key
    await db.flush()
    return participant


async def _occurrence(
    db: AsyncSession, participant: Participant, protocol: Any, visit: Any, start: datetime,
    hours: int = 12,
) -> VisitOccurrence:  # fmt: skip
    return await sched.create_occurrence(
        db, participant, protocol, visit, start=start.astimezone(UTC), hours=hours
    )


async def _messages(db: AsyncSession, participant: Participant) -> list[ReminderMessage]:
    rows = await db.scalars(
        select(ReminderMessage)
        .where(ReminderMessage.participant_id == participant.id)
        .order_by(ReminderMessage.moment)
    )
    return list(rows)


async def _ticks(db: AsyncSession, *moments: datetime) -> list[dispatch.TickResult]:
    return [await dispatch.tick(db, now=m.astimezone(UTC)) for m in moments]


async def test_window_open_and_before_close_at_local_times_in_two_zones_across_dst(
    db: AsyncSession,
) -> None:
    # The Monday after each zone's spring change: Berlin 29 March, New York 8 March 2026.
    study, site, visit, protocol = await _visit(db, trigger=Trigger.window_open)
    db.add(ReminderRule(study_id=study.id, visit_id=visit.id, trigger=Trigger.before_close,
                        hours_before_close=2))  # fmt: skip
    berlin = await _participant(db, site, BERLIN)
    new_york = await _participant(db, site, NEW_YORK)
    opens = {
        berlin.id: datetime(2026, 3, 30, 9, 0, tzinfo=BERLIN),
        new_york.id: datetime(2026, 3, 9, 9, 0, tzinfo=NEW_YORK),
    }
    for p in (berlin, new_york):
        await _occurrence(db, p, protocol, visit, opens[p.id])  # closes 21:00 local

    # Berlin first: a tick a minute before the local 09:00 finds nothing, one at it finds it.
    await _ticks(db, datetime(2026, 3, 9, 8, 0, tzinfo=NEW_YORK))
    before, at_open = await _ticks(
        db,
        datetime(2026, 3, 9, 8, 59, tzinfo=NEW_YORK),
        datetime(2026, 3, 9, 9, 0, tzinfo=NEW_YORK),
    )
    await _ticks(db, datetime(2026, 3, 9, 18, 59, tzinfo=NEW_YORK))
    closing = (await _ticks(db, datetime(2026, 3, 9, 19, 0, tzinfo=NEW_YORK)))[0]
    await _ticks(db, datetime(2026, 3, 30, 8, 59, tzinfo=BERLIN),
                 datetime(2026, 3, 30, 9, 0, tzinfo=BERLIN),
                 datetime(2026, 3, 30, 19, 0, tzinfo=BERLIN))  # fmt: skip

    assert (before.found, at_open.found, closing.found) == (0, 1, 1)
    for participant, zone in ((berlin, BERLIN), (new_york, NEW_YORK)):
        sent = [m.send_at.astimezone(zone).time() for m in await _messages(db, participant)]
        assert sent == [time(9, 0), time(19, 0)], participant.timezone
    # The UTC instants differ from the winter ones by the hour DST moved.
    (ny_open, _) = await _messages(db, new_york)
    assert ny_open.send_at == datetime(2026, 3, 9, 13, 0, tzinfo=UTC)


async def test_quiet_hours_hold_a_reminder_for_the_local_morning_across_dst(
    db: AsyncSession,
) -> None:
    _study, site, visit, protocol = await _visit(db, trigger=Trigger.window_open)
    berlin = await _participant(db, site, BERLIN)
    new_york = await _participant(db, site, NEW_YORK)
    # Berlin: 06:30 local on the morning the clocks went forward (02:00 -> 03:00).
    await _occurrence(db, berlin, protocol, visit, datetime(2026, 3, 29, 6, 30, tzinfo=BERLIN))
    # New York: 22:30 the evening before the clocks go back (1 November, 02:00 -> 01:00).
    await _occurrence(
        db, new_york, protocol, visit, datetime(2026, 10, 31, 22, 30, tzinfo=NEW_YORK)
    )

    await _ticks(
        db, datetime(2026, 3, 29, 4, 0, tzinfo=UTC), datetime(2026, 3, 29, 4, 31, tzinfo=UTC)
    )
    await _ticks(
        db, datetime(2026, 11, 1, 2, 0, tzinfo=UTC), datetime(2026, 11, 1, 2, 31, tzinfo=UTC)
    )

    (held_berlin,) = await _messages(db, berlin)
    (held_ny,) = await _messages(db, new_york)
    # 08:00 local: 06:00 UTC in summer time, 13:00 UTC once New York is back on EST.
    assert held_berlin.send_at == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)
    assert held_ny.send_at == datetime(2026, 11, 1, 13, 0, tzinfo=UTC)
    jobs = {
        j.id: j for j in await db.scalars(
            select(OutboxEvent).where(OutboxEvent.id.in_([held_berlin.job_id, held_ny.job_id]))
        )
    }  # fmt: skip
    # The relay publishes each when its morning comes: no message waits inside Celery.
    for held in (held_berlin, held_ny):
        assert held.job_id is not None and jobs[held.job_id].due_at == held.send_at
    assert {m.status for m in (held_berlin, held_ny)} == {"queued"}


async def test_a_late_tick_skips_what_is_stale_and_sends_what_is_not(db: AsyncSession) -> None:
    _study, site, visit, protocol = await _visit(
        db, trigger=Trigger.window_open, stale_after_minutes=6 * 60, quiet_start=time(0, 0),
        quiet_end=time(0, 0),
    )  # fmt: skip
    early = await _participant(db, site, BERLIN)
    late = await _participant(db, site, BERLIN)
    t0 = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)
    await _occurrence(db, early, protocol, visit, t0 + timedelta(hours=1))
    await _occurrence(db, late, protocol, visit, t0 + timedelta(hours=5))

    await _ticks(db, t0)
    (result,) = await _ticks(db, t0 + timedelta(hours=8))  # beat was down for eight hours

    assert (result.found, result.queued, result.skipped) == (2, 1, 1)
    (stale,) = await _messages(db, early)
    (fresh,) = await _messages(db, late)
    assert stale.status == "skipped" and "Stale" in (stale.error or "")
    assert stale.job_id is None and fresh.status == "queued" and fresh.job_id is not None


async def test_the_same_minute_twice_or_a_rewound_watermark_makes_no_second_message(
    db: AsyncSession,
) -> None:
    _study, site, visit, protocol = await _visit(db, trigger=Trigger.window_open)
    participant = await _participant(db, site, BERLIN)
    start = datetime(2026, 6, 2, 9, 0, tzinfo=BERLIN)
    await _occurrence(db, participant, protocol, visit, start)
    await _ticks(db, start - timedelta(minutes=5))

    first, second = await _ticks(db, start + timedelta(seconds=30), start + timedelta(seconds=30))
    # Another beat with an old view of the watermark finds it again: the unique key holds.
    await db.execute(update(DispatchWatermark).values(through=start - timedelta(minutes=5)))
    again = (await _ticks(db, start + timedelta(minutes=1)))[0]

    assert (first.queued, second.found, again.found, again.duplicates) == (1, 0, 1, 1)
    assert len(await _messages(db, participant)) == 1
    jobs = await db.scalar(
        select(func.count()).select_from(OutboxEvent).where(
            OutboxEvent.subject_id == participant.id, OutboxEvent.topic == "reminders.send"
        )
    )  # fmt: skip
    assert jobs == 1


async def test_withdrawn_or_opted_out_participants_get_nothing_and_the_next_channel_is_used(
    db: AsyncSession,
) -> None:
    _study, site, visit, protocol = await _visit(
        db, trigger=Trigger.window_open, channels=["email", "sms"]
    )
    withdrawn = await _participant(db, site, BERLIN)
    opted_out = await _participant(db, site, BERLIN, phone=True)
    unreachable = await _participant(db, site, BERLIN, email=False)
    start = datetime(2026, 6, 3, 9, 0, tzinfo=BERLIN)
    for p in (withdrawn, opted_out, unreachable):
        await _occurrence(db, p, protocol, visit, start)
    withdrawn.status = ParticipantStatus.withdrawn
    contact = await db.get(ParticipantContact, opted_out.id)
    assert contact is not None
    contact.email_opt_out = True
    await db.flush()

    await _ticks(db, start - timedelta(minutes=1), start)

    assert await _messages(db, withdrawn) == []
    (by_sms,) = await _messages(db, opted_out)
    assert (by_sms.channel, by_sms.status) == ("sms", "queued")
    (none,) = await _messages(db, unreachable)
    assert none.status == "skipped" and "No channel" in (none.error or "")


async def test_a_missed_visit_gives_a_coordinator_task_and_a_missed_visit_message(
    db: AsyncSession,
) -> None:
    study, site, visit, protocol = await _visit(db, trigger=Trigger.missed)
    missed = await _participant(db, site, BERLIN)
    done = await _participant(db, site, BERLIN)
    start = datetime(2026, 6, 4, 9, 0, tzinfo=BERLIN)
    await _occurrence(db, missed, protocol, visit, start)
    completed = await _occurrence(db, done, protocol, visit, start)
    completed.status = VisitStatus.completed
    await db.flush()

    close = start + timedelta(hours=12)
    await _ticks(db, close - timedelta(minutes=1), close + timedelta(minutes=1),
                 close + timedelta(minutes=2))  # fmt: skip

    (message,) = await _messages(db, missed)
    assert message.kind == "missed_visit"
    assert await _messages(db, done) == []
    tasks = list(
        await db.scalars(select(CoordinatorTask).where(CoordinatorTask.study_id == study.id))
    )
    assert [(t.participant_id, t.status) for t in tasks] == [(missed.id, "open")]
    assert tasks[0].title == f"{missed.participant_code}: Week1 missed"


async def test_an_unanswered_email_escalates_to_sms_and_an_answered_one_does_not(
    db: AsyncSession,
) -> None:
    _study, site, visit, protocol = await _visit(
        db, trigger=Trigger.window_open, escalate_to_sms_after_hours=4
    )
    silent = await _participant(db, site, BERLIN, phone=True)
    answered = await _participant(db, site, BERLIN, phone=True)
    start = datetime(2026, 6, 5, 9, 0, tzinfo=BERLIN)
    await _occurrence(db, silent, protocol, visit, start)
    answered_visit = await _occurrence(db, answered, protocol, visit, start)
    await _ticks(db, start - timedelta(minutes=1), start)
    for p in (silent, answered):  # both emails went out at the window's opening
        (email,) = await _messages(db, p)
        email.status, email.escalate_at = MessageStatus.sent, start + timedelta(hours=4)
    answered_visit.status = VisitStatus.completed
    await db.flush()

    await _ticks(db, start + timedelta(hours=4, minutes=1))

    assert [(m.channel, m.kind) for m in await _messages(db, silent)] == [
        ("email", "reminder"),
        ("sms", "escalation"),
    ]
    assert [m.channel for m in await _messages(db, answered)] == ["email"]
