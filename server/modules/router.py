from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from server.auth.deps import CurrentAdmin, CurrentPrincipal
from server.core.catalogue import PublicationStatus
from server.core.db import DBSession
from server.modules import service
from server.modules.deps import ValidModule
from server.modules.models import ModuleKind
from server.modules.schemas import ModuleCreate, ModuleRead, ModuleUpdate

router = APIRouter(prefix="/api/modules", tags=["modules"])


@router.get("", response_model=list[ModuleRead])
async def list_modules(
    db: DBSession,
    _: CurrentPrincipal,
    key: str | None = None,
    kind: ModuleKind | None = None,
    publication_status: Annotated[PublicationStatus | None, Query(alias="status")] = None,
) -> list[ModuleRead]:
    modules = await service.list_modules(db, key=key, kind=kind, status=publication_status)
    return [ModuleRead.model_validate(m) for m in modules]


@router.post("", response_model=ModuleRead, status_code=status.HTTP_201_CREATED)
async def create_module(module_in: ModuleCreate, db: DBSession, _: CurrentAdmin) -> ModuleRead:
    return ModuleRead.model_validate(await service.create(db, module_in=module_in))


@router.get("/{module_id}", response_model=ModuleRead)
async def get_module(module: ValidModule) -> ModuleRead:
    return ModuleRead.model_validate(module)


@router.patch("/{module_id}", response_model=ModuleRead)
async def update_module(
    _: CurrentAdmin, module_in: ModuleUpdate, module: ValidModule, db: DBSession
) -> ModuleRead:
    return ModuleRead.model_validate(await service.update(db, module=module, module_in=module_in))


@router.post("/{module_id}/publish", response_model=ModuleRead)
async def publish_module(_: CurrentAdmin, module: ValidModule, db: DBSession) -> ModuleRead:
    return ModuleRead.model_validate(await service.publish(db, module=module))


@router.post(
    "/{module_id}/versions", response_model=ModuleRead, status_code=status.HTTP_201_CREATED
)
async def create_module_version(_: CurrentAdmin, module: ValidModule, db: DBSession) -> ModuleRead:
    """A new draft copied from this module, numbered one past the key's highest version."""
    return ModuleRead.model_validate(await service.new_version(db, module=module))
