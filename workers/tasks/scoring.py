"""Scoring (reports queue): outbox topics `scoring.submission` and `scoring.session`."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.submissions import scoring_run
from workers import protocol


async def _score(db: AsyncSession, settings: Settings, payload: dict[str, Any]) -> str | None:
    # Idempotent by submission id: scores are unique per task and scorer version, and the
    # session's quality checks are recomputed whole.
    return await scoring_run.score_submission(db, uuid.UUID(payload["submission_id"]))


@protocol.job_task()
def score_submission(event_id: str) -> str:
    """Score one submission's tasks on the server and re-check its session's data quality."""
    return protocol.run(score_submission, event_id, _score)


async def _check(db: AsyncSession, settings: Settings, payload: dict[str, Any]) -> str | None:
    return await scoring_run.check_session(db, uuid.UUID(payload["session_id"]))


@protocol.job_task()
def check_session(event_id: str) -> str:
    """Re-check an ended session's data quality (its duration is known once it has ended)."""
    return protocol.run(check_session, event_id, _check)
