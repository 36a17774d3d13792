from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from server.participants.models import ParticipantStatus

# psychds: the CSVs again in a Psych-DS layout (data/*_data.csv, dataset_description.json).
Format = Literal["csv", "parquet", "sav", "dta", "psychds"]


class ModuleFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1, max_length=64)
    version: int | None = Field(default=None, ge=1)


class ExportFilters(BaseModel):
    """Which sessions: everything of the study the caller may see, narrowed by these (an
    export's and a REDCap push's)."""

    model_config = ConfigDict(extra="forbid")
    site_ids: list[uuid.UUID] | None = Field(default=None, max_length=500)
    modules: list[ModuleFilter] = Field(default_factory=list, max_length=100)
    # Sessions started on or after date_from and on or before date_to (UTC days).
    date_from: date | None = None
    date_to: date | None = None
    participant_statuses: list[ParticipantStatus] = Field(default_factory=list)


class ExportCreate(ExportFilters):
    """What to export, and in which formats."""

    formats: list[Format] = Field(default=["csv"], min_length=1)


class ExportRead(BaseModel):
    id: uuid.UUID
    study_id: uuid.UUID
    job_id: uuid.UUID | None
    # The job's state (queued, running, retrying, succeeded, failed).
    status: str
    filters: dict[str, object]
    formats: list[str]
    rows_done: int
    rows_total: int | None
    progress_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
    frozen_at: datetime | None
    source_export_id: uuid.UUID | None
    sha256: str | None
    size_bytes: int | None
    error: str | None
    # Why the job failed or is retrying, when it did.
    job_error: str | None = None
    # When done: a link to the zip, carrying a signed token that expires (and no data).
    download_url: str | None = None
    download_expires_at: datetime | None = None


class RedcapPushCreate(ExportFilters):
    """Which sessions to send to REDCap again: an export's filters (no formats)."""


class RedcapPushRead(BaseModel):
    id: uuid.UUID
    study_id: uuid.UUID
    job_id: uuid.UUID | None
    # The job's state (queued, running, retrying, succeeded, failed).
    status: str
    filters: dict[str, object]
    # Submissions the filters chose but consent left out, by reason (never who).
    excluded: dict[str, int]
    # The submissions chosen (once the job has chosen them), and how many are settled
    # (synced, failed or skipped): the progress.
    total: int | None
    settled: int
    # Records by their sync status: pending, synced, failed, skipped.
    counts: dict[str, int]
    created_at: datetime
    chosen_at: datetime | None
    finished_at: datetime | None
    # Why the job failed or is retrying, when it did (REDCap unreachable, say).
    job_error: str | None = None


class ExportPage(BaseModel):
    # Without download links: ask GET /api/exports/{id} for one.
    items: list[ExportRead]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page")


class RedcapPushPage(BaseModel):
    items: list[RedcapPushRead]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page")
