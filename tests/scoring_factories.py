"""A study with the built-in modules in one battery, a session, and plausible or crafted runs."""

from __future__ import annotations

import statistics
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.assessment_sessions.models import AssessmentSession
from server.core.config import Settings
from server.modules.builtin import load_builtins
from server.modules.models import Module
from server.participants.models import Participant
from server.studies.models import Study, StudyRole
from tests import factories
from tests import ingest_factories as ingest

BATTERY = ("simple_rt", "cpt", "mood9")
# The built-ins' norms (server.scoring.quality.MODULE_DEFAULTS): 180 + 480 + 120 s.
NORM_S = 780


@dataclass
class Lab:
    study: Study
    participant: Participant
    modules: dict[str, Module]
    session: AssessmentSession
    device_headers: dict[str, str]
    staff_headers: dict[str, str]


async def lab(db: AsyncSession, settings: Settings, role: StudyRole = StudyRole.coordinator) -> Lab:
    study = await factories.create_study(db)
    site = await factories.create_site(db, study)
    participant = await factories.create_participant(db, site)
    builtins = await load_builtins(db)
    modules = {key: builtins[key] for key in BATTERY}
    battery = await ingest.create_battery(db, study, list(modules.values()))
    # Started NORM_S ago by both clocks: a clean session's length and clock agree.
    began = datetime.now(UTC) - timedelta(seconds=NORM_S)
    session = AssessmentSession(
        id=uuid.uuid4(),
        participant_id=participant.id,
        study_id=study.id,
        battery_id=battery.id,
        device={"model": "Pixel 8", "os": "Android 15"},
        app_version="2.4.1",
        client_started_at=began,
        started_at=began,
    )
    db.add(session)
    await db.flush()
    user = await factories.create_user(db)
    await factories.add_member(db, study, user, role)
    return Lab(
        study,
        participant,
        modules,
        session,
        await ingest.participant_headers(db, settings, participant),
        await factories.auth_headers(db, settings, user),
    )


def rt_trials(rts: list[float | None], *, gap_ms: float = 1500.0) -> list[dict[str, Any]]:
    return [
        {
            "trial_index": i,
            "stimulus_onset_ms": gap_ms * i,
            "rt_ms": rt,
            "responded": rt is not None,
            "anticipation": False,
        }
        for i, rt in enumerate(rts)
    ]


def rt_summary(trials: list[dict[str, Any]]) -> dict[str, Any]:
    rts = [t["rt_ms"] for t in trials if t["responded"] and not t["anticipation"]]
    return {
        "n_trials": len(trials),
        "n_valid": len(rts),
        "mean_rt_ms": statistics.fmean(rts),
        "median_rt_ms": statistics.median(rts),
        "sd_rt_ms": statistics.stdev(rts),
        "n_lapses": sum(1 for t in trials if not t["responded"]),
    }


def clean_simple_rt() -> dict[str, Any]:
    trials = rt_trials([250.0 + (i % 5) * 20 for i in range(20)])
    return {
        "module_key": "simple_rt",
        "module_version": 1,
        "summary": rt_summary(trials),
        "trials": trials,
    }


def clean_cpt() -> dict[str, Any]:
    # 10 targets (one missed), 10 non-targets (one false alarm)
    trials = []
    for i in range(20):
        target = i % 2 == 0
        responded = (target and i != 4) or i == 7
        trials.append(
            {
                "trial_index": i,
                "stimulus": "X" if target else "A",
                "target": target,
                "responded": responded,
                "correct": target == responded,
                "rt_ms": 350.0 + i if responded else None,
            }
        )
    hit_rts = [350.0 + i for i in range(0, 20, 2) if i != 4]
    summary = {
        "n_trials": 20,
        "hits": 9,
        "misses": 1,
        "false_alarms": 1,
        "correct_rejections": 9,
        "hit_rate": 0.9,
        "false_alarm_rate": 0.1,
        # z(0.9) - z(0.1)
        "d_prime": 2.563,
        "mean_hit_rt_ms": statistics.fmean(hit_rts),
    }
    return {"module_key": "cpt", "module_version": 1, "summary": summary, "trials": trials}


def mood(codes: list[int]) -> dict[str, Any]:
    trials = [
        {"trial_index": n, "item_id": f"m{n + 1}", "response_code": c, "rt_ms": 1800.0}
        for n, c in enumerate(codes)
    ]
    # m5 and m8 reverse-scored: 3 - code
    total = sum(3 - c if n + 1 in (5, 8) else c for n, c in enumerate(codes))
    summary = {"total_score": total, "n_items_answered": len(codes)}
    return {"module_key": "mood9", "module_version": 1, "summary": summary, "trials": trials}


def submission(
    session: AssessmentSession,
    tasks: list[dict[str, Any]],
    *,
    sent_at: datetime | None = None,
    events: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "client_submission_id": f"sub-{uuid.uuid4().hex}",
        "session_id": str(session.id),
        "tasks": tasks,
        "client_submitted_at": (sent_at or datetime.now(UTC)).isoformat(),
    }
    if events is not None:
        body["events"] = events
    return body
