"""valid_study_id and friends: the 404 for another study's ids, raised once for every route."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends

from server.auth.deps import CurrentPrincipal
from server.core.db import DBSession
from server.studies.access import Permission, StudyAccess, require_study


def study_access(permission: str) -> Callable[..., Awaitable[StudyAccess]]:
    async def dependency(
        study_id: uuid.UUID, db: DBSession, principal: CurrentPrincipal
    ) -> StudyAccess:
        return await require_study(db, principal, study_id, permission)

    return dependency


StudyReader = Annotated[StudyAccess, Depends(study_access(Permission.READ))]
StudyManager = Annotated[StudyAccess, Depends(study_access(Permission.MANAGE))]
# The whole study's settings, sites, members, batteries, REDCap: never a site-scoped member.
StudyConfigurer = Annotated[StudyAccess, Depends(study_access(Permission.CONFIGURE))]
