from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer


class AuditEntryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    occurred_at: datetime
    actor_id: uuid.UUID | None
    action: str
    object_type: str
    object_id: str | None
    study_id: uuid.UUID | None
    site_id: uuid.UUID | None
    request_id: str | None
    client_ip: str | None
    summary: dict[str, Any]
    hash: bytes = Field(description="SHA-256 linking this entry to the one before (hex)")

    @field_serializer("hash")
    def _hex(self, value: bytes) -> str:
        return value.hex()


class AuditPage(BaseModel):
    items: list[AuditEntryRead]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page")
