"""Modules, batteries, sessions and participant tokens for ingest tests, plus payload builders."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.assessment_sessions.models import AssessmentSession
from server.batteries.models import Battery, BatteryModule
from server.core.catalogue import PublicationStatus
from server.core.config import Settings
from server.core.models import utcnow
from server.core.security import create_access_token
from server.modules.models import Module, ModuleKind
from server.participant_auth.models import ParticipantLogin
from server.participants.models import Participant
from server.studies.models import Study

RT_TRIAL = {
    "type": "object",
    "required": ["trial_index", "rt_ms", "responded"],
    "additionalProperties": False,
    "properties": {
        "trial_index": {"type": "integer", "minimum": 0},
        "rt_ms": {"type": ["number", "null"], "minimum": 0},
        "responded": {"type": "boolean"},
        "correct": {"type": "boolean"},
    },
}
RT_SUMMARY = {
    "type": "object",
    "required": ["n_trials", "mean_rt_ms"],
    "additionalProperties": False,
    "properties": {
        "n_trials": {"type": "integer", "minimum": 0},
        "mean_rt_ms": {"type": ["number", "null"]},
        "accuracy": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
    },
}
RT_METRICS = [
    {"key": "n_trials", "unit": "count", "label": "Trials", "derived_from": {"op": "count"}},
    {
        "key": "mean_rt_ms",
        "unit": "ms",
        "label": "Mean RT",
        "derived_from": {
            "op": "mean",
            "field": "rt_ms",
            "where": {"responded": True},
            "tolerance": 0.5,
        },
    },
    {
        "key": "accuracy",
        "unit": "proportion",
        "label": "Accuracy",
        "derived_from": {"op": "proportion", "field": "correct", "tolerance": 0.001},
    },
]


async def create_module(db: AsyncSession, key: str, version: int = 1) -> Module:
    module = Module(
        key=f"{key}",
        version=version,
        kind=ModuleKind.cognitive,
        name=key,
        trial_schema=RT_TRIAL,
        summary_schema=RT_SUMMARY,
        metrics=RT_METRICS,
        status=PublicationStatus.published,
        published_at=utcnow(),
    )
    db.add(module)
    await db.flush()
    return module


async def create_battery(db: AsyncSession, study: Study, modules: list[Module]) -> Battery:
    battery = Battery(
        study_id=study.id,
        key=f"b{uuid.uuid4().hex[:6]}",
        name="Visit",
        status=PublicationStatus.published,
        published_at=utcnow(),
    )
    db.add(battery)
    await db.flush()
    for position, module in enumerate(modules):
        db.add(BatteryModule(battery_id=battery.id, position=position, module_id=module.id))
    await db.flush()
    return battery


async def standard_modules(db: AsyncSession) -> list[Module]:
    suffix = uuid.uuid4().hex[:6]
    return [await create_module(db, f"{name}_{suffix}") for name in ("srt", "crt", "cpt")]


async def participant_headers(
    db: AsyncSession, settings: Settings, participant: Participant
) -> dict[str, str]:
    login = ParticipantLogin(participant_id=participant.id, expires_at=utcnow() + timedelta(days=1))
    db.add(login)
    await db.flush()
    token, _ = create_access_token(
        settings,
        subject=participant.id,
        session_id=login.id,
        kind="participant",
        expires_in=timedelta(days=1),
    )
    return {"Authorization": f"Bearer {token}"}


async def start_session(
    db: AsyncSession, participant: Participant, battery: Battery
) -> AssessmentSession:
    session = AssessmentSession(
        id=uuid.uuid4(),
        participant_id=participant.id,
        study_id=participant.study_id,
        battery_id=battery.id,
        client_started_at=datetime.now(UTC),
    )
    db.add(session)
    await db.flush()
    return session


def trials(n: int, *, start_rt: float = 300.0) -> list[dict[str, Any]]:
    return [
        {
            "trial_index": i,
            "rt_ms": start_rt + (i % 7) * 10.0,
            "responded": True,
            "correct": i % 5 != 0,
        }
        for i in range(n)
    ]


def summary_of(task_trials: list[dict[str, Any]]) -> dict[str, Any]:
    responded = [t["rt_ms"] for t in task_trials if t["responded"]]
    return {
        "n_trials": len(task_trials),
        "mean_rt_ms": sum(responded) / len(responded) if responded else None,
        "accuracy": sum(1 for t in task_trials if t["correct"]) / len(task_trials)
        if task_trials
        else None,
    }


def payload(
    session_id: uuid.UUID,
    modules: list[Module],
    *,
    n_trials: int = 100,
    client_submission_id: str | None = None,
) -> dict[str, Any]:
    tasks = []
    for module in modules:
        task_trials = trials(n_trials)
        tasks.append(
            {
                "module_key": module.key,
                "module_version": module.version,
                "summary": summary_of(task_trials),
                "trials": task_trials,
            }
        )
    return {
        "client_submission_id": client_submission_id or f"sub-{uuid.uuid4().hex}",
        "session_id": str(session_id),
        "tasks": tasks,
        "client_submitted_at": datetime.now(UTC).isoformat(),
    }
