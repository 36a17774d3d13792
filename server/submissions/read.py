"""Submissions as staff read them: one with its tasks, and a study's list by status (the
coordinators' quarantine list)."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

import orjson
from sqlalchemy import literal, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from server.core.errors import NotFound, Unprocessable
from server.participants.models import Participant
from server.studies.access import SiteScope
from server.submissions.models import Submission, SubmissionStatus, SubmissionTask
from server.submissions.schemas import (
    SubmissionIn,
    SubmissionListItem,
    SubmissionPage,
    SubmissionRead,
    TaskRead,
)


def _encode_cursor(received_at: datetime, submission_id: uuid.UUID) -> str:
    text = f"{received_at.isoformat()}|{submission_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, submission_id = text.partition("|")
        received_at = datetime.fromisoformat(at)
        if received_at.tzinfo is None:
            raise ValueError("naive")
        return received_at, uuid.UUID(submission_id)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Unprocessable(
            "The cursor is not valid.",
            details=[{"loc": ["query", "cursor"], "msg": "not a cursor this API issued"}],
        ) from None


async def list_page(
    db: AsyncSession,
    *,
    study_id: uuid.UUID,
    scope: SiteScope,
    status: SubmissionStatus,
    cursor: str | None,
    limit: int,
) -> SubmissionPage:
    """The study's submissions of one status (those of the sites scope covers), oldest
    first."""
    # Not the raw bytes: a list has no use for them.
    query = (
        select(Submission)
        .options(defer(Submission.raw_payload))
        .where(
            Submission.study_id == study_id,
            # A literal, not a parameter: the planner can then use the partial index of the
            # quarantined rows (ix_submissions_quarantined) under any plan.
            Submission.status == literal(status.value, literal_execute=True),
        )
    )
    if not scope.whole_study:
        query = scope.filter(
            query.join(Participant, Participant.id == Submission.participant_id),
            Participant.site_id,
        )
    if cursor:
        query = query.where(
            tuple_(Submission.received_at, Submission.id) > tuple_(*_decode_cursor(cursor))
        )
    rows = list(
        (
            await db.execute(query.order_by(Submission.received_at, Submission.id).limit(limit + 1))
        ).scalars()
    )
    last = rows[limit - 1] if len(rows) > limit else None
    return SubmissionPage(
        items=[
            SubmissionListItem(
                submission_id=s.id,
                client_submission_id=s.client_submission_id,
                participant_id=s.participant_id,
                session_id=s.session_id,
                checksum=s.checksum,
                received_at=s.received_at,
                status=s.status,
                problems=s.problems or [],
                reprocessed_at=s.reprocessed_at,
                reprocessed_by=s.reprocessed_by,
            )
            for s in rows[:limit]
        ],
        next_cursor=_encode_cursor(last.received_at, last.id) if last is not None else None,
    )


def _tasks_as_sent(raw: bytes) -> list[TaskRead]:
    """A quarantined submission's tasks, read from its body: none are stored until accepted."""
    tasks = SubmissionIn.model_validate(orjson.loads(raw)).tasks
    return [
        TaskRead(
            position=i,
            module_key=t.module_key,
            module_version=t.module_version,
            n_trials=len(t.trials),
            summary=t.summary,
            trials=t.trials,
        )
        for i, t in enumerate(tasks)
    ]


async def get(db: AsyncSession, submission_id: uuid.UUID) -> SubmissionRead:
    submission = await db.get(Submission, submission_id)
    if submission is None:
        raise NotFound("No such submission.")
    if submission.status == SubmissionStatus.quarantined:
        tasks = _tasks_as_sent(submission.raw_payload)
    else:
        rows = await db.execute(
            select(SubmissionTask)
            .where(SubmissionTask.submission_id == submission_id)
            .order_by(SubmissionTask.position)
        )
        tasks = [
            TaskRead(
                position=t.position,
                module_key=t.module_key,
                module_version=t.module_version,
                n_trials=t.n_trials,
                summary=t.summary,
                trials=t.trials,
            )
            for t in rows.scalars()
        ]
    return SubmissionRead(
        submission_id=submission.id,
        client_submission_id=submission.client_submission_id,
        session_id=submission.session_id,
        checksum=submission.checksum,
        received_at=submission.received_at,
        status=submission.status,
        problems=submission.problems or [],
        participant_id=submission.participant_id,
        study_id=submission.study_id,
        reprocessed_at=submission.reprocessed_at,
        reprocessed_by=submission.reprocessed_by,
        tasks=tasks,
    )
