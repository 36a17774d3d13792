"""valid_job_id: another study's job (another site's, for a site-scoped member) answers 404,
as if it did not exist."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends

from server.auth.deps import CurrentPrincipal
from server.core.db import DBSession
from server.core.errors import NotFound
from server.jobs import scope
from server.outbox.models import OutboxEvent
from server.studies.access import Permission, require_study_of


async def valid_job_id(
    job_id: uuid.UUID, db: DBSession, principal: CurrentPrincipal
) -> OutboxEvent:
    job = await db.get(OutboxEvent, job_id)
    if job is None:
        raise NotFound("No such job.")
    if principal.is_admin:
        return job
    if job.study_id is None:
        # Work of no study (maintenance, say) is for administrators only.
        raise NotFound("No such job.")
    site_id = await scope.site_of(db, job)
    access = await require_study_of(
        db, principal, job.study_id, Permission.READ, thing="job", site_id=site_id
    )
    if site_id is None and not access.sites.whole_study:
        # A job that names no participant is the whole study's business.
        raise NotFound("No such job.")
    return job


ValidJob = Annotated[OutboxEvent, Depends(valid_job_id)]
