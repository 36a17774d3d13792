"""A participant's course: completed sessions days apart, each submitted through the API and
scored by the server, with the trials kept for the tests to compute what reports must show."""

from __future__ import annotations

import statistics
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from server.assessment_sessions.models import AssessmentSession, SessionStatus
from server.batteries.models import Battery
from server.core.config import Settings
from server.modules.builtin import load_builtins
from server.participants.models import Participant
from server.schedules.models import VisitOccurrence, VisitStatus
from server.studies.models import Site, Study
from server.submissions import scoring_run
from tests import factories, schedule_factories
from tests import ingest_factories as ingest
from tests import scoring_factories as sf

BATTERY = ("simple_rt", "cpt", "mood9")


@dataclass
class Course:
    study: Study
    site: Site
    battery: Battery
    participant: Participant
    sessions: list[AssessmentSession] = field(default_factory=list)
    rts: list[list[float | None]] = field(default_factory=list)
    moods: list[list[int]] = field(default_factory=list)


async def setup(db: AsyncSession) -> tuple[Study, Site, Battery]:
    study = await factories.create_study(db)
    site = await factories.create_site(db, study)
    builtins = await load_builtins(db)
    battery = await ingest.create_battery(db, study, [builtins[k] for k in BATTERY])
    return study, site, battery


async def add_visit(
    db: AsyncSession,
    client: AsyncClient,
    settings: Settings,
    course: Course,
    rts: list[float | None],
    mood: list[int],
    *,
    when: datetime,
) -> AssessmentSession:
    """One completed session at `when` with these RTs (None: a lapse) and mood codes."""
    session = AssessmentSession(
        id=uuid.uuid4(),
        participant_id=course.participant.id,
        study_id=course.study.id,
        battery_id=course.battery.id,
        status=SessionStatus.completed,
        client_started_at=when,
        started_at=when,
    )
    db.add(session)
    await db.flush()
    trials = sf.rt_trials(rts)
    tasks = [
        {
            "module_key": "simple_rt",
            "module_version": 1,
            "summary": sf.rt_summary(trials),
            "trials": trials,
        },
        sf.clean_cpt(),
        sf.mood(mood),
    ]
    headers = await ingest.participant_headers(db, settings, course.participant)
    response = await client.post("/api/submit", json=sf.submission(session, tasks), headers=headers)
    assert response.status_code == 201, response.text
    await scoring_run.score_submission(db, uuid.UUID(response.json()["submission_id"]))
    course.sessions.append(session)
    course.rts.append(rts)
    course.moods.append(mood)
    return session


def mean_rt(rts: list[float | None]) -> float:
    return statistics.fmean(r for r in rts if r is not None)


def mood_total(codes: list[int]) -> int:
    return sum(3 - c if n + 1 in (5, 8) else c for n, c in enumerate(codes))


# Four visits: RT 290 -> 300 -> (lapses: flagged) -> 380 ms; mood total 14 -> ... -> 4.
RTS: list[list[float | None]] = [
    [250.0 + (i % 5) * 20 for i in range(20)],
    [260.0 + (i % 5) * 20 for i in range(20)],
    [None if i % 3 == 0 else 300.0 + (i % 5) * 20 for i in range(20)],
    [340.0 + (i % 5) * 20 for i in range(20)],
]
MOODS = [
    [2, 2, 2, 1, 1, 2, 1, 1, 2],
    [2, 1, 2, 1, 1, 2, 1, 2, 1],
    [1, 1, 1, 1, 2, 1, 1, 2, 1],
    [0, 1, 0, 1, 3, 0, 1, 3, 0],
]


async def course(
    db: AsyncSession,
    client: AsyncClient,
    settings: Settings,
    *,
    site: Site | None = None,
    study: Study | None = None,
    battery: Battery | None = None,
    visits: int = 4,
) -> Course:
    if study is None or site is None or battery is None:
        study, site, battery = await setup(db)
    participant = await factories.create_participant(
        db, site, email="never.in.reports@example.org", phone="+15550001111"
    )
    c = Course(study, site, battery, participant)
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    for n in range(visits):
        await add_visit(
            db, client, settings, c, RTS[n % 4], MOODS[n % 4], when=start + timedelta(days=14 * n)
        )
    return c


async def scheduled_course(
    db: AsyncSession,
    client: AsyncClient,
    settings: Settings,
    plan: list[tuple[str, VisitStatus]],
    *,
    site: Site | None = None,
    study: Study | None = None,
    battery: Battery | None = None,
    version: int = 1,
    extra: tuple[datetime, ...] = (),
) -> tuple[Course, list[VisitOccurrence]]:
    """A participant on a protocol of these visits (label, status), two weeks apart, each a
    12-hour window from 09:00 UTC. A completed visit is completed by a session inside its
    window, the k-th such session with RTS[k % 4] and MOODS[k % 4]. `extra`: sessions at these
    moments tied to no visit (their values likewise by their place among the sessions). A
    second participant of the study needs another protocol `version`."""
    if study is None or site is None or battery is None:
        study, site, battery = await setup(db)
    participant = await factories.create_participant(
        db, site, email="never.in.reports@example.org", phone="+15550001111"
    )
    c = Course(study, site, battery, participant)
    specs = [
        {"key": f"v{i}", "label": label, "offset_days": 14 * i} for i, (label, _) in enumerate(plan)
    ]
    protocol, visits = await schedule_factories.create_protocol(
        db, study, battery, version=version, visits=specs
    )
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    occurrences = []
    for i, ((_, status), visit) in enumerate(zip(plan, visits, strict=True)):
        opens = start + timedelta(days=14 * i)
        occurrence = await schedule_factories.create_occurrence(
            db, participant, protocol, visit, start=opens, hours=12
        )
        occurrence.status = status
        if status == VisitStatus.completed:
            k = len(c.sessions)
            session = await add_visit(
                db, client, settings, c, RTS[k % 4], MOODS[k % 4], when=opens + timedelta(hours=1)
            )
            occurrence.session_id = session.id
            occurrence.completed_at = opens + timedelta(hours=1, minutes=15)
        occurrences.append(occurrence)
    for when in extra:
        k = len(c.sessions)
        await add_visit(db, client, settings, c, RTS[k % 4], MOODS[k % 4], when=when)
    await db.flush()
    return c, occurrences
