"""valid_module_id: the module, for any logged-in staff user, or 404."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends

from server.auth.deps import CurrentPrincipal
from server.core.db import DBSession
from server.modules import service
from server.modules.models import Module


async def valid_module_id(module_id: uuid.UUID, db: DBSession, _: CurrentPrincipal) -> Module:
    # The principal comes first: without a login, every id answers 401, never 404.
    return await service.get(db, module_id)


ValidModule = Annotated[Module, Depends(valid_module_id)]
