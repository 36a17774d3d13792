"""Reminder rules, messages and coordinator tasks for tests (flush, never commit): rows as
the dispatch and the sending would leave them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from server.batteries.models import Battery
from server.coordinator_tasks.models import CoordinatorTask, TaskKind, TaskStatus
from server.core.config import Settings
from server.participants.models import Participant
from server.reminders.models import (
    Channel,
    MessageKind,
    MessageStatus,
    ReminderMessage,
    ReminderRule,
    Trigger,
)
from server.schedules.models import ScheduleProtocol, ScheduleVisit, VisitOccurrence
from server.studies.models import Site, Study, StudyRole
from tests import factories
from tests import ingest_factories as ingest
from tests import schedule_factories as sched

MOMENT = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@dataclass
class Schedule:
    protocol: ScheduleProtocol
    visits: list[ScheduleVisit]


async def create_schedule(
    db: AsyncSession, study: Study, battery: Battery, version: int = 1
) -> Schedule:
    """A published protocol of the study (baseline, week1, week4, week12)."""
    protocol, visits = await sched.create_protocol(db, study, battery, version=version)
    return Schedule(protocol, visits)


async def create_rule(
    db: AsyncSession,
    visit: ScheduleVisit,
    study: Study,
    *,
    trigger: Trigger = Trigger.window_open,
    hours_before_close: int = 0,
    channels: list[str] | None = None,
) -> ReminderRule:
    rule = ReminderRule(
        study_id=study.id,
        visit_id=visit.id,
        trigger=trigger,
        hours_before_close=hours_before_close,
        channels=channels or ["email"],
    )
    db.add(rule)
    await db.flush()
    return rule


async def create_occurrence(
    db: AsyncSession, participant: Participant, schedule: Schedule, visit_index: int = 0
) -> VisitOccurrence:
    return await sched.create_occurrence(
        db, participant, schedule.protocol, schedule.visits[visit_index], start=MOMENT
    )


async def create_message(
    db: AsyncSession,
    occurrence: VisitOccurrence,
    rule: ReminderRule,
    *,
    channel: Channel = Channel.email,
    status: MessageStatus = MessageStatus.failed,
    error: str | None = None,
    provider: str | None = "smtp",
    attempts: int = 1,
    created_at: datetime | None = None,
) -> ReminderMessage:
    """A message of the occurrence by the rule: failed (with its provider's reason) unless
    told otherwise."""
    message = ReminderMessage(
        study_id=occurrence.study_id,
        site_id=occurrence.site_id,
        participant_id=occurrence.participant_id,
        occurrence_id=occurrence.id,
        rule_id=rule.id,
        channel=channel,
        kind=MessageKind.reminder,
        moment=MOMENT,
        send_at=MOMENT,
        status=status,
        attempts=attempts,
        provider=provider,
        error=error,
        sent_at=MOMENT if status in (MessageStatus.sent, MessageStatus.delivered) else None,
        created_at=created_at or MOMENT,
    )
    db.add(message)
    await db.flush()
    return message


async def create_task(
    db: AsyncSession,
    occurrence: VisitOccurrence,
    *,
    status: TaskStatus = TaskStatus.open,
    created_at: datetime | None = None,
    title: str = "Missed visit",
) -> CoordinatorTask:
    """A missed-visit task for the occurrence, as the dispatch writes it."""
    task = CoordinatorTask(
        study_id=occurrence.study_id,
        site_id=occurrence.site_id,
        participant_id=occurrence.participant_id,
        occurrence_id=occurrence.id,
        kind=TaskKind.missed_visit,
        title=title,
        status=status,
        created_at=created_at or MOMENT + timedelta(hours=12),
    )
    if status == TaskStatus.closed:
        task.closed_at, task.note = task.created_at + timedelta(hours=1), "Done before."
    db.add(task)
    await db.flush()
    return task


EMAIL = "ann.smith@example.org"
ROLES = ("coordinator", "scoped", "researcher", "viewer")


@dataclass
class World:
    """A study of two sites with a protocol, a participant at each and a rule."""

    study: Study
    site_a: Site
    site_b: Site
    schedule: Schedule
    participants: dict[str, Participant]  # "A" (site A, with EMAIL), "B" (site B, a phone)
    rule: ReminderRule  # window_open of the first visit
    headers: dict[str, dict[str, str]]  # by ROLES: "scoped" is a coordinator of site A only


async def create_world(db: AsyncSession, settings: Settings) -> World:
    study = await factories.create_study(db)
    site_a = await factories.create_site(db, study, code="A")
    site_b = await factories.create_site(db, study, code="B")
    battery = await ingest.create_battery(db, study, await ingest.standard_modules(db))
    schedule = await create_schedule(db, study, battery)
    participants = {
        "A": await factories.create_participant(db, site_a, code="P-A", email=EMAIL),
        "B": await factories.create_participant(db, site_b, code="P-B", phone="+447700900123"),
    }
    users = {role: await factories.create_user(db) for role in ROLES}
    await factories.add_member(db, study, users["coordinator"], StudyRole.coordinator)
    await factories.add_member(db, study, users["scoped"], StudyRole.coordinator, sites=[site_a])
    await factories.add_member(db, study, users["researcher"], StudyRole.researcher)
    await factories.add_member(db, study, users["viewer"], StudyRole.viewer)
    return World(
        study=study,
        site_a=site_a,
        site_b=site_b,
        schedule=schedule,
        participants=participants,
        rule=await create_rule(db, schedule.visits[0], study),
        headers={r: await factories.auth_headers(db, settings, u) for r, u in users.items()},
    )
