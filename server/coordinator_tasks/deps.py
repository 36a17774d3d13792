"""valid task ids: another study's task, or one of a site a site-scoped member does not
cover, answers 404."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from server.auth.deps import CurrentPrincipal, Principal
from server.coordinator_tasks import service
from server.coordinator_tasks.models import CoordinatorTask
from server.core.db import DBSession
from server.studies.access import Permission, StudyAccess, require_study_of


@dataclass(frozen=True)
class TaskAccess:
    task: CoordinatorTask
    study: StudyAccess
    principal: Principal


def task_access(permission: str) -> Callable[..., Awaitable[TaskAccess]]:
    async def dependency(
        task_id: uuid.UUID, db: DBSession, principal: CurrentPrincipal
    ) -> TaskAccess:
        task, site_id = await service.get(db, task_id)
        access = await require_study_of(
            db, principal, task.study_id, permission, thing="task", site_id=site_id
        )
        return TaskAccess(task=task, study=access, principal=principal)

    return dependency


# Tasks are follow-ups with participants: those who may manage participants (coordinators).
TaskManager = Annotated[TaskAccess, Depends(task_access(Permission.MANAGE))]
