"""connection_access: another study's REDCap connection answers 404, like the study would."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from server.auth.deps import CurrentPrincipal
from server.core.db import DBSession
from server.redcap import service
from server.redcap.models import RedcapConnection
from server.studies.access import Permission, StudyAccess, require_study_of


@dataclass(frozen=True)
class ConnectionAccess:
    connection: RedcapConnection
    study: StudyAccess


def connection_access(permission: str) -> Callable[..., Awaitable[ConnectionAccess]]:
    async def dependency(
        connection_id: uuid.UUID, db: DBSession, principal: CurrentPrincipal
    ) -> ConnectionAccess:
        connection = await service.get(db, connection_id)
        access = await require_study_of(
            db,
            principal,
            connection.study_id,
            permission,
            thing="REDCap connection",
            site_id=connection.site_id,
        )
        return ConnectionAccess(connection=connection, study=access)

    return dependency


ConnectionReader = Annotated[ConnectionAccess, Depends(connection_access(Permission.READ))]
# Connections, mappings, resyncs and imports move the whole study's (or a site's) data to
# REDCap: configuration, not for a site-scoped member (403 site_scoped).
ConnectionManager = Annotated[ConnectionAccess, Depends(connection_access(Permission.CONFIGURE))]
