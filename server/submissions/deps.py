"""valid_submission_id: another study's submission (or another site's, for a site-scoped
member) answers 404."""

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
from server.participants.models import Participant
from server.studies.access import Permission, StudyAccess, require_study_of
from server.submissions.models import Submission


@dataclass(frozen=True)
class SubmissionAccess:
    submission_id: uuid.UUID
    study: StudyAccess
    site_id: uuid.UUID  # the participant's
    principal: Principal


def submission_access(permission: str) -> Callable[..., Awaitable[SubmissionAccess]]:
    async def dependency(
        submission_id: uuid.UUID, db: DBSession, principal: CurrentPrincipal
    ) -> SubmissionAccess:
        row = (
            await db.execute(
                select(Submission.study_id, Participant.site_id)
                .join(Participant, Participant.id == Submission.participant_id)
                .where(Submission.id == submission_id)
            )
        ).one_or_none()
        if row is None:
            raise NotFound("No such submission.")
        access = await require_study_of(
            db, principal, row.study_id, permission, thing="submission", site_id=row.site_id
        )
        return SubmissionAccess(
            submission_id=submission_id, study=access, site_id=row.site_id, principal=principal
        )

    return dependency


SubmissionReader = Annotated[SubmissionAccess, Depends(submission_access(Permission.READ))]
# Coordinators (and administrators), of the submission's site when site-scoped: reprocessing
# releases data to REDCap.
SubmissionManager = Annotated[SubmissionAccess, Depends(submission_access(Permission.MANAGE))]
