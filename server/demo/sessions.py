"""The demo participants' history: the visits their schedule had before today, each run
through the participant app's own path (server.assessment_sessions start, the idempotent
submit of server.submissions with its outbox rows, the session's end completing its visit),
so the worker scores and checks them as it would any session.

The data are fixed by SEED: every machine's demo shows the same trials. Who did what:
- most participants attend every visit; five visits were missed (MISSED);
- FLAGGED rushed one session (many anticipations, the app sent to the background);
- QUARANTINED's app sent one submission its module refuses (kept, quarantined, explained);
- WITHDRAWN withdrew after two visits and asked that none of their data be used.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.assessment_sessions import service as sessions_service
from server.assessment_sessions.schemas import SessionEnd, SessionStart
from server.batteries.models import Battery
from server.consent import service as consent_service
from server.consent.models import DataUse
from server.consent.schemas import WithdrawalIn
from server.core import clock
from server.demo import trials
from server.participants.models import Participant
from server.participants.schemas import ParticipantRef
from server.schedules import materialise
from server.schedules.models import ScheduleVisit, VisitOccurrence
from server.scoring.quality import MODULE_DEFAULTS
from server.submissions import service as submissions_service
from server.submissions.models import SubmissionStatus
from server.submissions.schemas import SubmissionIn

SEED = 20261206
APP_VERSION = "2.4.1"
DEVICES = (
    {"model": "iPhone 13", "os": "iOS 17.5"},
    {"model": "Pixel 7", "os": "Android 14"},
    {"model": "Galaxy A54", "os": "Android 14"},
    {"model": "iPad (9th generation)", "os": "iPadOS 17.4"},
)
# By participant code: the demo's special cases (README, tests).
FLAGGED = "LON-006"
QUARANTINED = "NYC-009"
WITHDRAWN = "NYC-003"
# Visits nobody came to (participant code, visit key): the missed-visit view has something.
MISSED = {("LON-004", "week4"), ("NYC-007", "week1"), ("LON-012", "week4"),
          ("NYC-015", "week1"), ("LON-018", "week1")}  # fmt: skip


def enrolled_days_ago(n: int) -> int:
    """Participant n (1-20) enrolled this many days before the seeding: from 91 days (every
    visit behind them) to today (their baseline is due)."""
    return round((20 - n) * 4.8)


@dataclass
class History:
    sessions: int = 0
    accepted: int = 0
    quarantined: int = 0
    missed: int = 0
    withdrawn: int = 0
    per_participant: dict[str, int] = field(default_factory=dict)


async def seed_demo_sessions(
    db: AsyncSession,
    *,
    study_id: uuid.UUID,
    participants: list[Participant],
    batteries: list[Battery],
    now: datetime,
) -> History:
    """Materialise the demo schedules and play every visit whose window closed before `now`.
    The clock (server.core.clock) stands at each moment in turn, so sessions end, visits
    complete and the withdrawal happens when they did; it is reset afterwards."""
    await materialise.materialise_new(db, now=now, study_id=study_id)
    modules = {b.id: [m.key for m in await sessions_service.battery_modules(db, b.id)]
               for b in batteries}  # fmt: skip
    history = History()
    try:
        for participant in participants:
            count = await _participant(db, participant, modules, now, history)
            history.per_participant[participant.participant_code] = count
    finally:
        clock.clock.reset()
    await _server_times(db, study_id)
    return history


async def _participant(
    db: AsyncSession,
    participant: Participant,
    modules: dict[uuid.UUID, list[str]],
    now: datetime,
    history: History,
) -> int:
    code = participant.participant_code
    ref = ParticipantRef.model_validate(participant, from_attributes=True)
    rng = random.Random(f"{SEED}:{code}")
    person = trials.profile(rng)
    device = rng.choice(DEVICES)
    rows = await db.execute(
        select(VisitOccurrence, ScheduleVisit)
        .join(ScheduleVisit, ScheduleVisit.id == VisitOccurrence.visit_id)
        .where(VisitOccurrence.participant_id == participant.id)
        .order_by(VisitOccurrence.window_start)
    )
    done = 0
    for number, (occurrence, visit) in enumerate(rows.all()):
        if occurrence.window_end > now:
            break  # open now or ahead: the participant's app shows it
        visit_rng = random.Random(f"{SEED}:{code}:{visit.key}")
        if code == WITHDRAWN and number == 2:
            clock.clock.set(occurrence.window_start - timedelta(days=10))
            await consent_service.withdraw(
                db,
                participant_id=participant.id,
                withdrawal_in=WithdrawalIn(reason="Moving abroad (demo)", data_use=DataUse.none),
                by=None,
            )
            history.withdrawn += 1
            break
        if (code, visit.key) in MISSED:
            history.missed += 1
            continue
        keys = modules[visit.battery_id]
        minutes = visit_rng.randint(20, 13 * 60)  # some time that day, not always at 09:00
        started = occurrence.window_start + timedelta(minutes=minutes)
        # About the battery's typical length: the duration check's norm (server.scoring).
        norm_s = sum(MODULE_DEFAULTS[k]["duration"]["norm_s"] for k in keys)
        length = norm_s * visit_rng.uniform(0.85, 1.25)
        ended = started + timedelta(seconds=round(length))
        special = {FLAGGED: "rushed", QUARANTINED: "refused"}.get(code) if number == 1 else None
        tasks = _tasks(visit_rng, person, keys, number, rushed=special == "rushed")
        if special == "refused":
            # An app build that sent a reaction time as text: the schema refuses the task.
            tasks[1]["trials"][7]["rt_ms"] = str(tasks[1]["trials"][7]["rt_ms"])
        events = []
        if special == "rushed":
            at = (started + timedelta(seconds=95)).isoformat()
            events = [
                {"type": kind, "at": at, "module_key": "simple_rt"}
                for kind in ("app_backgrounded", "app_foregrounded")
            ]
        session_id = uuid.UUID(int=visit_rng.getrandbits(128), version=4)
        status = await _run_session(
            db, ref, occurrence.id, visit.battery_id, session_id, started, ended, device,
            tasks, events,
        )  # fmt: skip
        history.sessions += 1
        if status == SubmissionStatus.accepted:
            history.accepted += 1
        else:
            history.quarantined += 1
        done += 1
    return done


def _tasks(
    rng: random.Random, person: trials.Profile, keys: list[str], number: int, *, rushed: bool
) -> list[dict[str, Any]]:
    practice = 6.0 * min(number, 3)  # a little faster with each visit
    builders = {
        "simple_rt": lambda: trials.simple_rt(
            rng, person, practice=practice, anticipations=0.35 if rushed else 0.015
        ),
        "choice_rt": lambda: trials.choice_rt(rng, person, practice=practice),
        "cpt": lambda: trials.cpt(rng, person, practice=practice),
        "digit_span": lambda: trials.digit_span(rng, person),
        "mood9": lambda: trials.mood9(rng, person, drift=-0.15 * number),
    }
    return [builders[key]() for key in keys]


async def _run_session(
    db: AsyncSession,
    participant: ParticipantRef,
    visit_id: uuid.UUID,
    battery_id: uuid.UUID,
    session_id: uuid.UUID,
    started: datetime,
    ended: datetime,
    device: dict[str, str],
    tasks: list[dict[str, Any]],
    events: list[dict[str, Any]],
) -> SubmissionStatus:
    """Start, submit all of the battery's tasks at once, end: the app's three requests."""
    clock.clock.set(started)
    await sessions_service.start(
        db,
        participant=participant,
        session_in=SessionStart(
            session_id=session_id,
            battery_id=battery_id,
            device=device,
            app_version=APP_VERSION,
            client_started_at=started,
            visit_id=visit_id,
        ),
    )
    sent = ended + timedelta(seconds=2)
    payload: dict[str, Any] = {
        "client_submission_id": f"demo-{session_id.hex}",
        "session_id": str(session_id),
        "tasks": tasks,
        "client_submitted_at": sent.isoformat(),
        "events": events,
    }
    raw = orjson.dumps(payload)
    receipt, _ = await submissions_service.submit(
        db,
        participant=participant,
        submission_in=SubmissionIn.model_validate(payload),
        payload=payload,
        raw=raw,
    )
    clock.clock.set(ended + timedelta(seconds=4))
    end = SessionEnd(session_id=session_id, status="completed", client_ended_at=ended)
    await sessions_service.end(db, participant=participant, end_in=end)
    return receipt.status


async def _server_times(db: AsyncSession, study_id: uuid.UUID) -> None:
    """The server stamps a session's start and a submission's receipt with the wall clock,
    not server.core.clock: moved to when the replayed app sent them (a second after its own
    clock), so reports chart the visits on their days and the clock-drift check sees none."""
    params = {"study_id": study_id}
    await db.execute(
        text(
            "UPDATE assessment_sessions SET started_at = client_started_at + interval '1 second'"
            " WHERE study_id = :study_id"
        ),
        params,
    )
    await db.execute(
        text(
            "UPDATE submissions s SET received_at = a.client_ended_at + interval '3 seconds'"
            " FROM assessment_sessions a WHERE a.id = s.session_id AND s.study_id = :study_id"
        ),
        params,
    )
