"""Coordinator tasks: listed for a study's coordinators (by the sites they cover), read one
by one, and closed with a note. Written by the reminders' dispatch (a missed visit); here only
read and closed. Services flush, never commit."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.coordinator_tasks.models import CoordinatorTask, TaskStatus
from server.coordinator_tasks.schemas import TaskRead
from server.core.errors import Conflict, NotFound
from server.participants.models import Participant
from server.schedules.models import ScheduleVisit, VisitOccurrence
from server.studies.access import SiteScope


def _query() -> Select[CoordinatorTask, str, uuid.UUID, str]:
    """Each task with its participant's code and current site, and its visit's label: the
    participant's site now, not when the task was written (a move takes its tasks along)."""
    return (
        select(
            CoordinatorTask,
            Participant.participant_code,
            Participant.site_id.label("participant_site_id"),
            ScheduleVisit.label,
        )
        .join(Participant, Participant.id == CoordinatorTask.participant_id)
        .outerjoin(VisitOccurrence, VisitOccurrence.id == CoordinatorTask.occurrence_id)
        .outerjoin(ScheduleVisit, ScheduleVisit.id == VisitOccurrence.visit_id)
    )


def _read(task: CoordinatorTask, code: str, site_id: uuid.UUID, label: str | None) -> TaskRead:
    return TaskRead(
        id=task.id,
        study_id=task.study_id,
        site_id=site_id,
        participant_id=task.participant_id,
        participant_code=code,
        occurrence_id=task.occurrence_id,
        visit_label=label,
        kind=task.kind,
        title=task.title,
        status=task.status,
        note=task.note,
        created_at=task.created_at,
        closed_at=task.closed_at,
        closed_by=task.closed_by,
    )


async def list_tasks(
    db: AsyncSession,
    *,
    study_id: uuid.UUID,
    scope: SiteScope,
    status: TaskStatus | None = None,
    site_id: uuid.UUID | None = None,
    participant_id: uuid.UUID | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[TaskRead]:
    """The study's tasks at the sites scope covers, newest first."""
    query = _query().where(CoordinatorTask.study_id == study_id)
    if scope.site_ids is not None:
        # SiteScope.filter's test, inline: it types a query of one entity only.
        query = query.where(Participant.site_id.in_(sorted(scope.site_ids)))
    if status is not None:
        query = query.where(CoordinatorTask.status == status)
    if site_id is not None:
        query = query.where(Participant.site_id == site_id)
    if participant_id is not None:
        query = query.where(CoordinatorTask.participant_id == participant_id)
    query = query.order_by(CoordinatorTask.created_at.desc(), CoordinatorTask.id.desc())
    rows = (await db.execute(query.limit(limit).offset(offset))).all()
    return [_read(*row) for row in rows]


async def get(db: AsyncSession, task_id: uuid.UUID) -> tuple[CoordinatorTask, uuid.UUID]:
    """The task and its participant's current site (which decides who may see it)."""
    row = (
        await db.execute(
            select(CoordinatorTask, Participant.site_id)
            .join(Participant, Participant.id == CoordinatorTask.participant_id)
            .where(CoordinatorTask.id == task_id)
        )
    ).first()
    if row is None:
        raise NotFound("No such task.")
    return row[0], row[1]


async def read(db: AsyncSession, task: CoordinatorTask) -> TaskRead:
    row = (await db.execute(_query().where(CoordinatorTask.id == task.id))).one()
    return _read(*row)


async def close(
    db: AsyncSession, *, task: CoordinatorTask, note: str, user_id: uuid.UUID, now: datetime
) -> CoordinatorTask:
    """Closed with the note, by the user. One statement conditional on the task being open:
    of two people closing it at once, one does and the other is told it is closed (409)."""
    closed = await db.scalar(
        update(CoordinatorTask)
        .where(CoordinatorTask.id == task.id, CoordinatorTask.status == TaskStatus.open)
        .values(status=TaskStatus.closed, note=note, closed_at=now, closed_by=user_id)
        .returning(CoordinatorTask.id)
        .execution_options(synchronize_session=False)
    )
    if closed is None:
        raise Conflict("This task is already closed.", error_code="task_closed")
    await db.refresh(task)
    return task
