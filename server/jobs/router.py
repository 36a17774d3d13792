"""Background jobs and dead letters over HTTP.

Staff see the jobs of their studies; administrators see every job, the dead letters, the
outbox backlog, and can re-run a dead letter.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from server.audit import service as audit
from server.audit.models import AuditAction
from server.auth.deps import CurrentAdmin, CurrentPrincipal
from server.core.db import DBSession
from server.core.models import utcnow
from server.jobs import service
from server.jobs.deps import ValidJob
from server.jobs.schemas import BacklogRead, DeadLetterRead, JobRead
from server.outbox import backlog
from server.outbox.models import JobStatus
from server.studies.access import Permission, require_study

router = APIRouter(prefix="/api/jobs", tags=["jobs"])
dead_letters_router = APIRouter(prefix="/api/dead-letters", tags=["jobs"])

Limit = Annotated[int, Query(ge=1, le=200)]
Offset = Annotated[int, Query(ge=0)]


@router.get("", response_model=list[JobRead])
async def list_jobs(
    db: DBSession,
    principal: CurrentPrincipal,
    study_id: uuid.UUID | None = None,
    status: JobStatus | None = None,
    kind: str | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[JobRead]:
    """Newest first. Staff: only their studies' jobs; a study they are not in answers 404."""
    if study_id is not None:
        await require_study(db, principal, study_id, Permission.READ)
    jobs = await service.list_jobs(
        db,
        member_of=None if principal.is_admin else principal.user.id,
        study_id=study_id,
        status=status,
        kind=kind,
        limit=limit,
        offset=offset,
    )
    return [JobRead.model_validate(j) for j in jobs]


# Before /{job_id}, which would otherwise take "backlog" for an id.
@router.get("/backlog", response_model=BacklogRead)
async def outbox_backlog(db: DBSession, _: CurrentAdmin) -> BacklogRead:
    state = await backlog.backlog(db, now=utcnow())
    return BacklogRead(
        pending=state.pending,
        unpublished=state.unpublished,
        oldest_pending_age_seconds=state.oldest_pending_age_seconds,
        by_topic=state.by_topic,
    )


@router.get("/{job_id}", response_model=JobRead)
async def get_job(job: ValidJob) -> JobRead:
    return JobRead.model_validate(job)


@dead_letters_router.get("", response_model=list[DeadLetterRead])
async def list_dead_letters(
    db: DBSession,
    _: CurrentAdmin,
    rerun: bool | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[DeadLetterRead]:
    """Newest first; rerun=false for those still waiting for someone to look at them."""
    dead = await service.list_dead_letters(db, rerun=rerun, limit=limit, offset=offset)
    return [DeadLetterRead.model_validate(d) for d in dead]


@dead_letters_router.post("/{dead_letter_id}/rerun", response_model=DeadLetterRead)
async def rerun_dead_letter(
    dead_letter_id: uuid.UUID, db: DBSession, _: CurrentAdmin
) -> DeadLetterRead:
    """Queue a failed job (its id is the dead letter's) again, with a fresh budget of attempts;
    the relay publishes it."""
    row = await service.rerun(db, job_id=dead_letter_id, now=utcnow())
    await audit.record(
        db,
        action=AuditAction.dead_letter_rerun,
        object_type="dead_letter",
        object_id=row.id,
        study_id=row.study_id,
        # The topic, not the payload: those are ids today, but nothing here checks that.
        summary={"topic": row.topic},
    )
    return DeadLetterRead.model_validate(row)
