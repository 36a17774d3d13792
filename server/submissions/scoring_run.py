"""Scoring a stored submission (the `scoring.submission` outbox task's service call): its tasks
by their module version's scorer, then the whole session's quality checks again.

Here rather than in server.scoring because it reads submissions; server.scoring takes plain
values. Idempotent: a task already scored by the current scorer version keeps its row, and the
session's checks are recomputed whole.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Text, cast, func, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.assessment_sessions.models import AssessmentSession
from server.assessment_sessions.service import battery_modules
from server.core.models import utcnow
from server.item_banks.models import ItemBank
from server.modules.models import Module, ModuleKind
from server.outbox import service as outbox
from server.outbox.models import OutboxEvent
from server.scoring import quality
from server.scoring import service as scoring
from server.submissions.models import Submission, SubmissionStatus, SubmissionTask

_WHEN: TypeAdapter[datetime | None] = TypeAdapter(datetime | None)


def _client_facts(raw: bytes) -> tuple[datetime | None, list[dict[str, Any]]]:
    """client_submitted_at and the reported events, from the bytes as received."""
    try:
        payload = orjson.loads(raw)
        sent = _WHEN.validate_python(payload.get("client_submitted_at"))
    except (orjson.JSONDecodeError, AttributeError, ValidationError):
        # Stored but not in the shape these facts need (quarantined, say): no facts from it.
        return None, []
    if sent is not None and sent.tzinfo is None:
        sent = sent.replace(tzinfo=UTC)  # as the API documents datetimes without a zone
    events = payload.get("events")
    return sent, [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []


async def _modules(db: AsyncSession, ids: set[uuid.UUID]) -> dict[uuid.UUID, Module]:
    rows = await db.scalars(select(Module).where(Module.id.in_(ids)))
    return {m.id: m for m in rows}


async def _items(db: AsyncSession, modules: list[Module]) -> dict[uuid.UUID, list[dict[str, Any]]]:
    bank_ids = {m.item_bank_id for m in modules if m.item_bank_id is not None}
    if not bank_ids:
        return {}
    rows = await db.scalars(select(ItemBank).where(ItemBank.id.in_(bank_ids)))
    return {bank.id: bank.items for bank in rows}


async def _lock_session(db: AsyncSession, session_id: uuid.UUID) -> AssessmentSession | None:
    # One scoring run per session at a time: its checks are replaced whole.
    await db.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(str(session_id), 0))))
    # Read after the lock, and afresh: an end committed meanwhile must be seen.
    return await db.get(AssessmentSession, session_id, populate_existing=True)


async def _session_tasks(db: AsyncSession, session_id: uuid.UUID) -> list[Any]:
    """(submission, task) of every submission of the session, in the order received."""
    return list(
        await db.execute(
            select(Submission, SubmissionTask)
            .join(SubmissionTask, SubmissionTask.submission_id == Submission.id)
            .where(Submission.session_id == session_id)
            .order_by(Submission.received_at, SubmissionTask.position)
        )
    )


async def score_submission(db: AsyncSession, submission_id: uuid.UUID) -> str | None:
    """Score one submission and re-check its session; nothing if the submission is gone."""
    submission = await db.get(Submission, submission_id)
    if submission is None:
        return None
    session = await _lock_session(db, submission.session_id)
    if session is None:
        return None
    rows = await _session_tasks(db, session.id)
    modules = await _modules(db, {task.module_id for _, task in rows})
    items = await _items(db, list(modules.values()))
    await scoring.store_scores(
        db,
        session_id=session.id,
        raw_checksum=submission.checksum,
        tasks=[
            scoring.TaskToScore(
                submission_id=submission_id,
                position=task.position,
                module_id=task.module_id,
                module_key=task.module_key,
                module_version=task.module_version,
                metrics=modules[task.module_id].metrics,
                items=items.get(modules[task.module_id].item_bank_id or uuid.UUID(int=0)),
                summary=task.summary,
                trials=task.trials,
            )
            for sub, task in rows
            if sub.id == submission_id
        ],
    )
    await _check_session(db, session, rows, modules)
    return None


async def check_session(db: AsyncSession, session_id: uuid.UUID) -> str | None:
    """Re-check a session's quality (it has ended: its duration is known now)."""
    session = await _lock_session(db, session_id)
    if session is None:
        return None
    rows = await _session_tasks(db, session.id)
    await _check_session(db, session, rows, await _modules(db, {t.module_id for _, t in rows}))
    return None


async def _check_session(
    db: AsyncSession,
    session: AssessmentSession,
    rows: list[Any],
    modules: dict[uuid.UUID, Module],
) -> None:
    overrides = await scoring.thresholds_of(db, session.study_id)
    mismatches = await scoring.mismatches_by_task(db, session.id)
    task_checks = [
        (sub.id, check)
        for sub, task in rows
        for check in quality.task_checks(
            quality.TaskFacts(
                module_key=task.module_key,
                position=task.position,
                questionnaire=modules[task.module_id].kind == ModuleKind.questionnaire,
                trials=task.trials,
                mismatches=mismatches.get((sub.id, task.position), 0),
            ),
            overrides,
        )
    ]
    submissions = {sub.id: sub for sub, _ in rows}
    sent_and_events = {sid: _client_facts(sub.raw_payload) for sid, sub in submissions.items()}
    facts = quality.SessionFacts(
        battery_keys=[m.key for m in await battery_modules(db, session.battery_id)],
        submitted_keys={task.module_key for _, task in rows},
        client_started_at=session.client_started_at,
        started_at=session.started_at,
        client_ended_at=session.client_ended_at,
        submissions=[
            (sent_and_events[sid][0], sub.received_at) for sid, sub in submissions.items()
        ],
        events=[e for sent, events in sent_and_events.values() for e in events],
    )
    await scoring.replace_checks(
        db,
        session_id=session.id,
        task_checks=task_checks,
        session_checks=quality.session_checks(facts, overrides),
    )


async def queue_study(db: AsyncSession, *, study_id: uuid.UUID) -> int:
    """A scoring.submission outbox row for every accepted submission of the study, in one
    statement; returns how many. The task is idempotent, so queuing twice costs work, not rows.
    A quarantined submission is scored when it is released (its release emits the topic)."""
    now = utcnow()
    rows = select(
        func.gen_random_uuid(),
        literal(outbox.SCORING_SUBMISSION),
        func.jsonb_build_object("submission_id", cast(Submission.id, Text)),
        literal(now),
        literal(now),
        Submission.id,
        Submission.study_id,
    ).where(Submission.study_id == study_id, Submission.status == SubmissionStatus.accepted)
    columns = ["id", "topic", "payload", "created_at", "due_at", "subject_id", "study_id"]
    result = await db.execute(
        insert(OutboxEvent).from_select(columns, rows).returning(OutboxEvent.id)
    )
    return len(result.all())
