from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from server.batteries.models import Battery
from server.core.catalogue import KEY, PublicationStatus
from server.modules.models import Module, ModuleKind

MAX_MODULES = 50


class BatteryCreate(BaseModel):
    key: str = Field(pattern=KEY)
    version: int = Field(default=1, ge=1)
    name: str = Field(min_length=1, max_length=200)
    # Published modules, in the order a visit runs them.
    module_ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_MODULES)


class BatteryUpdate(BaseModel):
    """Draft batteries only; nulls change nothing."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    module_ids: list[uuid.UUID] | None = Field(default=None, min_length=1, max_length=MAX_MODULES)


class BatteryModuleRead(BaseModel):
    position: int
    module_id: uuid.UUID
    key: str
    version: int
    kind: ModuleKind
    name: str


class BatteryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    study_id: uuid.UUID
    key: str
    version: int
    name: str
    status: PublicationStatus
    published_at: datetime | None
    created_at: datetime
    updated_at: datetime
    modules: list[BatteryModuleRead]

    @classmethod
    def build(cls, battery: Battery, modules: list[Module]) -> BatteryRead:
        return cls(
            id=battery.id,
            study_id=battery.study_id,
            key=battery.key,
            version=battery.version,
            name=battery.name,
            status=battery.status,
            published_at=battery.published_at,
            created_at=battery.created_at,
            updated_at=battery.updated_at,
            modules=[
                BatteryModuleRead(
                    position=position,
                    module_id=m.id,
                    key=m.key,
                    version=m.version,
                    kind=m.kind,
                    name=m.name,
                )
                for position, m in enumerate(modules)
            ],
        )
