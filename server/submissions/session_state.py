"""A session as its submissions show it: the state a device resumes from (its battery, and the
modules already in), and a participant's sessions with their submissions, for staff."""

from __future__ import annotations

import uuid
from collections import defaultdict

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.assessment_sessions.models import AssessmentSession
from server.assessment_sessions.schemas import (
    SessionRead,
    SessionState,
    SessionWithData,
    SubmissionBrief,
    TaskSummaryRead,
)
from server.assessment_sessions.service import battery_modules
from server.scoring import service as scoring_service
from server.scoring.schemas import QualityCheckRead
from server.submissions.models import Submission, SubmissionStatus, SubmissionTask


class SessionWithQuality(SessionWithData):
    """A session for staff: its submissions and its fired data-quality flags (all checks,
    quiet ones too, and the scores: GET /api/sessions/{id}/quality)."""

    quality_flags: list[QualityCheckRead]


async def state_of(db: AsyncSession, session: AssessmentSession) -> SessionState:
    submitted = await db.execute(
        select(SubmissionTask.module_key)
        .join(Submission, Submission.id == SubmissionTask.submission_id)
        .where(Submission.session_id == session.id)
        .distinct()
    )
    keys = set(submitted.scalars())
    # A quarantined submission's modules are in too: the device was told to let them go, and
    # the participant is not asked to do them again (their tasks are in the raw body only).
    held = await db.scalars(
        select(Submission.raw_payload).where(
            Submission.session_id == session.id,
            Submission.status == SubmissionStatus.quarantined,
        )
    )
    for raw in held:
        keys.update(str(t.get("module_key")) for t in orjson.loads(raw).get("tasks", []))
    return SessionState(
        **SessionRead.model_validate(session).model_dump(),
        modules=await battery_modules(db, session.battery_id),
        submitted_module_keys=sorted(keys),
    )


async def list_for_participant(
    db: AsyncSession, *, participant_id: uuid.UUID
) -> list[SessionWithQuality]:
    sessions = list(
        (
            await db.execute(
                select(AssessmentSession)
                .where(AssessmentSession.participant_id == participant_id)
                .order_by(AssessmentSession.started_at.desc())
            )
        ).scalars()
    )
    # Outer: a quarantined submission (no task rows) shows too, with its status and problems.
    rows = await db.execute(
        select(Submission, SubmissionTask)
        .outerjoin(SubmissionTask, SubmissionTask.submission_id == Submission.id)
        .where(Submission.participant_id == participant_id)
        .order_by(Submission.received_at, SubmissionTask.position)
    )
    briefs: dict[uuid.UUID, dict[uuid.UUID, SubmissionBrief]] = defaultdict(dict)
    for submission, task in rows:
        brief = briefs[submission.session_id].setdefault(
            submission.id,
            SubmissionBrief(
                id=submission.id,
                client_submission_id=submission.client_submission_id,
                checksum=submission.checksum,
                received_at=submission.received_at,
                status=submission.status.value,
                problems=submission.problems or [],
                tasks=[],
            ),
        )
        if task is None:
            continue
        brief.tasks.append(
            TaskSummaryRead(
                module_key=task.module_key,
                module_version=task.module_version,
                n_trials=task.n_trials,
                summary=task.summary,
            )
        )
    flags = await scoring_service.flags_by_session(db, [s.id for s in sessions])
    return [
        SessionWithQuality(
            **SessionRead.model_validate(s).model_dump(),
            submissions=list(briefs[s.id].values()),
            quality_flags=flags.get(s.id, []),
        )
        for s in sessions
    ]
