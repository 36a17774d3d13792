"""battery_access: a battery of a study you are not in answers 404, like the study would."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from server.auth.deps import CurrentPrincipal
from server.batteries import service
from server.batteries.models import Battery
from server.core.db import DBSession
from server.studies.access import Permission, StudyAccess, require_study_of


@dataclass(frozen=True)
class BatteryAccess:
    battery: Battery
    study: StudyAccess


def battery_access(permission: str) -> Callable[..., Awaitable[BatteryAccess]]:
    async def dependency(
        battery_id: uuid.UUID, db: DBSession, principal: CurrentPrincipal
    ) -> BatteryAccess:
        battery = await service.get(db, battery_id)
        access = await require_study_of(
            db, principal, battery.study_id, permission, thing="battery"
        )
        return BatteryAccess(battery=battery, study=access)

    return dependency


BatteryReader = Annotated[BatteryAccess, Depends(battery_access(Permission.READ))]
# A battery is the whole study's: changing one is configuration, not a site's business.
BatteryManager = Annotated[BatteryAccess, Depends(battery_access(Permission.CONFIGURE))]
