from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from server.outbox.models import JobStatus


class JobRead(BaseModel):
    """An outbox row as a job: kind is its topic."""

    model_config = ConfigDict(from_attributes=True, populate_by_name=True)

    id: uuid.UUID
    kind: str = Field(validation_alias="topic")
    status: JobStatus
    study_id: uuid.UUID | None
    subject_id: uuid.UUID | None
    progress: int
    attempts: int
    error: str | None
    result_location: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class DeadLetterRead(BaseModel):
    """A failed outbox row: the job itself, with what it was given (ids only)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    topic: str
    payload: dict[str, Any]
    study_id: uuid.UUID | None
    subject_id: uuid.UUID | None
    status: JobStatus
    error: str | None
    attempts: int
    failed_at: datetime | None = Field(validation_alias="finished_at")
    rerun_at: datetime | None


class BacklogRead(BaseModel):
    """The outbox as the relay sees it: counts and ages only."""

    pending: int
    unpublished: int
    oldest_pending_age_seconds: float | None
    by_topic: dict[str, int]
