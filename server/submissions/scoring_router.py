"""Coordinators queue a study's submissions for scoring again (after a new scorer version)."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel

from server.core.db import DBSession
from server.core.errors import error_responses
from server.studies.deps import StudyManager
from server.submissions import scoring_run

router = APIRouter(prefix="/api/studies", tags=["quality"])


class RescoreQueued(BaseModel):
    queued: int


@router.post(
    "/{study_id}/rescore",
    response_model=RescoreQueued,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(401, 403, 404),
)
async def rescore_study(access: StudyManager, db: DBSession) -> RescoreQueued:
    """Every submission of the study, queued for scoring: each task gets a row for the
    current scorer version where it has none (earlier versions' rows stay), and each
    session's quality checks are computed again with the study's current thresholds."""
    return RescoreQueued(queued=await scoring_run.queue_study(db, study_id=access.study.id))
