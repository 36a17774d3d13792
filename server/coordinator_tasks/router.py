"""/api/tasks: the coordinators' to-do list (a missed visit to follow up), and closing a task
with a note of what was done."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from server.audit import service as audit
from server.audit.models import AuditAction
from server.coordinator_tasks import service
from server.coordinator_tasks.deps import TaskManager
from server.coordinator_tasks.models import TaskStatus
from server.coordinator_tasks.schemas import TaskClose, TaskRead
from server.core import clock
from server.core.db import DBSession
from server.core.errors import NotFound, error_responses
from server.participants import service as participants_service
from server.studies.deps import StudyManager

router = APIRouter(prefix="/api/tasks", tags=["coordinator tasks"])


@router.get("", response_model=list[TaskRead])
async def list_tasks(
    access: StudyManager,
    db: DBSession,
    status: TaskStatus | None = None,
    site_id: uuid.UUID | None = None,
    participant_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[TaskRead]:
    """The study's tasks, newest first; a site-scoped member's: those of their sites."""
    if site_id is not None and not access.sites.covers(site_id):
        # Filtering by a site outside one's scope names a site one cannot see.
        raise NotFound("No such site in this study.")
    if participant_id is not None:
        await participants_service.participant_of_study(
            db, study_id=access.study.id, participant_id=participant_id, scope=access.sites
        )
    return await service.list_tasks(
        db,
        study_id=access.study.id,
        scope=access.sites,
        status=status,
        site_id=site_id,
        participant_id=participant_id,
        limit=limit,
        offset=offset,
    )


@router.get("/{task_id}", response_model=TaskRead)
async def get_task(access: TaskManager, db: DBSession) -> TaskRead:
    return await service.read(db, access.task)


@router.post(
    "/{task_id}/close",
    response_model=TaskRead,
    responses=error_responses(409, s409="The task is already closed (task_closed)"),
)
async def close_task(close_in: TaskClose, access: TaskManager, db: DBSession) -> TaskRead:
    """Close the task with a note of what was done; recorded in the audit trail."""
    task = await service.close(
        db,
        task=access.task,
        note=close_in.note,
        user_id=access.principal.user.id,
        now=clock.now(),
    )
    read = await service.read(db, task)
    await audit.record(
        db,
        action=AuditAction.task_closed,
        object_type="coordinator_task",
        object_id=task.id,
        study_id=task.study_id,
        site_id=read.site_id,
        summary={
            "kind": task.kind.value,
            "participant_id": str(task.participant_id),
            "occurrence_id": str(task.occurrence_id),
            "note": close_in.note,
        },
    )
    return read
