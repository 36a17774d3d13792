"""valid_submission_id: another study's submission answers 404."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from sqlalchemy import select

from server.auth.deps import CurrentPrincipal
from server.core.db import DBSession
from server.core.errors import NotFound
from server.studies.access import Permission, StudyAccess, require_study_of
from server.submissions.models import Submission


@dataclass(frozen=True)
class SubmissionAccess:
    submission_id: uuid.UUID
    study: StudyAccess


async def submission_reader(
    submission_id: uuid.UUID, db: DBSession, principal: CurrentPrincipal
) -> SubmissionAccess:
    study_id = await db.scalar(select(Submission.study_id).where(Submission.id == submission_id))
    if study_id is None:
        raise NotFound("No such submission.")
    access = await require_study_of(db, principal, study_id, Permission.READ, thing="submission")
    return SubmissionAccess(submission_id=submission_id, study=access)


SubmissionReader = Annotated[SubmissionAccess, Depends(submission_reader)]
