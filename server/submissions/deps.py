"""valid_submission_id: another study's submission answers 404."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from sqlalchemy import select

from server.auth.deps import CurrentPrincipal, Principal
from server.core.db import DBSession
from server.core.errors import NotFound
from server.studies.access import Permission, StudyAccess, require_study_of
from server.submissions.models import Submission


@dataclass(frozen=True)
class SubmissionAccess:
    submission_id: uuid.UUID
    study: StudyAccess
    principal: Principal


def submission_access(permission: str) -> Callable[..., Awaitable[SubmissionAccess]]:
    async def dependency(
        submission_id: uuid.UUID, db: DBSession, principal: CurrentPrincipal
    ) -> SubmissionAccess:
        study_id = await db.scalar(
            select(Submission.study_id).where(Submission.id == submission_id)
        )
        if study_id is None:
            raise NotFound("No such submission.")
        access = await require_study_of(db, principal, study_id, permission, thing="submission")
        return SubmissionAccess(submission_id=submission_id, study=access, principal=principal)

    return dependency


SubmissionReader = Annotated[SubmissionAccess, Depends(submission_access(Permission.READ))]
# Coordinators (and administrators): reprocessing releases data to REDCap.
SubmissionManager = Annotated[SubmissionAccess, Depends(submission_access(Permission.MANAGE))]
