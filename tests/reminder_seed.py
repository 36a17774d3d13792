"""A study whose participants have a visit window opening now and an email reminder rule,
for the tests and the benchmark that run real workers against a real SMTP server."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.config import Settings
from server.participants import contacts
from server.participants.models import Participant, ParticipantContact
from server.reminders.models import DispatchWatermark, ReminderRule, Trigger
from server.schedules.models import VisitOccurrence
from tests import factories
from tests import ingest_factories as ingest
from tests import schedule_factories as sched


@dataclass(frozen=True)
class Seeded:
    study_id: uuid.UUID
    participants: list[Participant]
    emails: dict[uuid.UUID, str]
    phones: dict[uuid.UUID, str]


async def seed(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, *, n: int, now: datetime
) -> Seeded:
    """n participants (Europe/Berlin, email and phone on file) whose week-1 window opened 30 s
    before `now`; an email reminder at window open, no quiet hours; the dispatch watermark a
    minute before `now`, so the next tick at `now` finds all n."""
    async with sessions() as db, db.begin():
        study = await factories.create_study(db)
        site = await factories.create_site(db, study)
        battery = await ingest.create_battery(db, study, await ingest.standard_modules(db))
        protocol, (visit,) = await sched.create_protocol(
            db, study, battery, visits=[{"key": "week1", "offset_days": 7}]
        )
        db.add(ReminderRule(
            study_id=study.id, visit_id=visit.id, trigger=Trigger.window_open,
            channels=["email"], quiet_start=time(0, 0), quiet_end=time(0, 0),
        ))  # fmt: skip
        participants, emails, phones = [], {}, {}
        for i in range(n):
            participant = Participant(
                study_id=study.id, site_id=site.id, participant_code=f"R-{i:04d}",
                timezone="Europe/Berlin", language="en",
            )  # fmt: skip
            db.add(participant)
            await db.flush()
            emails[participant.id] = f"reminded.{i}.{uuid.uuid4().hex[:6]}@example.org"
            phones[participant.id] = f"+4930901{i:04d}"
            contact = ParticipantContact(participant_id=participant.id)
            contacts.write(
                contact, settings, email=emails[participant.id], phone=phones[participant.id],
                push=None,
            )  # fmt: skip
            db.add(contact)
            db.add(VisitOccurrence(
                participant_id=participant.id, study_id=study.id, site_id=site.id,
                protocol_id=protocol.id, visit_id=visit.id, occurrence=0,
                window_start=now - timedelta(seconds=30), window_end=now + timedelta(hours=12),
            ))  # fmt: skip
            participants.append(participant)
        await db.merge(DispatchWatermark(id=1, through=now - timedelta(minutes=1)))
    return Seeded(study.id, participants, emails, phones)
