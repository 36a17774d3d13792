from __future__ import annotations

import uuid
from datetime import date, datetime

from pydantic import BaseModel, Field, model_validator

from server.outbox.models import JobStatus
from server.reports.models import ReportKind


class ReportCreate(BaseModel):
    """kind participant: subject_id is the participant; session: the session; study_progress:
    the study (the study_id of the request)."""

    kind: ReportKind
    subject_id: uuid.UUID
    # "module.metric" or "metric" keys; none: each module's key metrics.
    metrics: list[str] | None = Field(default=None, max_length=100)
    # Sessions started on or after `since` and before `until` (dates, UTC).
    since: date | None = None
    until: date | None = None

    @model_validator(mode="after")
    def _range(self) -> ReportCreate:
        if self.since and self.until and self.until <= self.since:
            raise ValueError("until must be after since")
        return self


class ReportRead(BaseModel):
    id: uuid.UUID
    study_id: uuid.UUID
    kind: ReportKind
    subject_id: uuid.UUID
    status: JobStatus
    job_id: uuid.UUID | None
    reused: bool = False
    created_at: datetime
    built_at: datetime | None
    pages: int | None
    size_bytes: int | None
    # Signed for the caller, expires at download_expires_at; ids only, nothing about the person.
    download_url: str | None = None
    download_expires_at: datetime | None = None
