from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class SyncItem(BaseModel):
    type: Literal["session_start", "session_end", "submission"]
    data: dict[str, Any]


class SyncIn(BaseModel):
    """What an offline device queued, in the order it happened."""

    items: list[SyncItem] = Field(min_length=1, max_length=500)


class ItemError(BaseModel):
    error_code: str
    message: str
    details: Any = None


class ItemResult(BaseModel):
    index: int
    type: str
    status: Literal["stored", "quarantined", "duplicate", "rejected"] = Field(
        description="stored; quarantined: stored as sent, but its tasks do not fit their "
        "modules (result.problems says where) and a coordinator reprocesses it, so the device "
        "may delete it like a stored one; duplicate: stored before (result says as what); "
        "rejected: not stored (error says why): the device keeps it"
    )
    id: str | None = None
    result: dict[str, Any] | None = None
    error: ItemError | None = None


class SyncResult(BaseModel):
    stored: int
    quarantined: int
    duplicate: int
    rejected: int
    items: list[ItemResult]
