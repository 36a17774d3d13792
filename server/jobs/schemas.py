from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from server.jobs.models import JobStatus


class JobRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: str
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
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    job_id: uuid.UUID | None
    task_name: str
    args: dict[str, Any]
    error: str
    attempts: int
    failed_at: datetime
    rerun_at: datetime | None
    rerun_job_id: uuid.UUID | None


class BacklogRead(BaseModel):
    """The outbox as the relay sees it: counts and ages only."""

    pending: int
    unpublished: int
    oldest_pending_age_seconds: float | None
    by_topic: dict[str, int]
