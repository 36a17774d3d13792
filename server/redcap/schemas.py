from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.outbox.models import JobStatus
from server.redcap.models import SyncStatus

TOKEN_PATTERN = r"^[0-9A-Fa-f]{32}$"
FIELD_NAME = r"^[a-z][a-z0-9_]{0,99}$"
SOURCE_PATTERN = (
    r"^(session\.(date|started_at|visit|device|app_version)"
    r"|module\.[a-z][a-z0-9_]{0,63}\.[a-z][a-z0-9_]{0,63})$"
)


def _check_api_url(value: str) -> str:
    value = value.strip()
    if not value.startswith(("https://", "http://")):
        raise ValueError("must be an http(s) URL")
    if not value.endswith("/api/"):
        raise ValueError("must end with /api/ (REDCap's API address)")
    parts = urlsplit(value)
    if not parts.hostname:
        raise ValueError("must name a host")
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        port = 0
    if port == 0:
        raise ValueError("has a port that is not a number from 1 to 65535")
    return value


# ----- connections -----------------------------------------------------------------------------
class ConnectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_url: str = Field(max_length=500, examples=["https://redcap.example.org/api/"])
    token: str = Field(pattern=TOKEN_PATTERN, description="32 hex characters; never shown again")
    site_id: uuid.UUID | None = Field(
        default=None, description="Only this site's participants; null for the whole study"
    )
    max_calls_per_minute: int = Field(default=120, ge=1, le=600)
    batch_size: int = Field(default=500, ge=1, le=5000)
    enabled: bool = True

    @field_validator("api_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_api_url(value)


class ConnectionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_url: str | None = Field(default=None, max_length=500)
    token: str | None = Field(default=None, pattern=TOKEN_PATTERN)
    max_calls_per_minute: int | None = Field(default=None, ge=1, le=600)
    batch_size: int | None = Field(default=None, ge=1, le=5000)
    enabled: bool | None = None

    @field_validator("api_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _check_api_url(value)


class ConnectionRead(BaseModel):
    """A connection as staff see it: the token only as its last four characters."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    study_id: uuid.UUID
    site_id: uuid.UUID | None
    api_url: str
    token_last4: str
    project_title: str | None
    redcap_version: str | None
    is_longitudinal: bool | None
    has_repeating: bool | None
    last_tested_at: datetime | None
    max_calls_per_minute: int
    batch_size: int
    enabled: bool
    created_at: datetime
    updated_at: datetime


class RepeatingInstrument(BaseModel):
    form_name: str
    event_name: str | None = None


class ConnectionTestResult(BaseModel):
    project_id: int | None
    project_title: str
    redcap_version: str | None
    is_longitudinal: bool
    has_repeating: bool
    repeating_instruments: list[RepeatingInstrument]
    in_production: bool
    tested_at: datetime


# ----- mapping ---------------------------------------------------------------------------------
class FieldMap(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        pattern=SOURCE_PATTERN,
        description="session.date | session.started_at | session.visit | session.device | "
        "session.app_version | module.<module_key>.<metric_key>",
    )
    field: str = Field(pattern=FIELD_NAME, description="A REDCap field name")


class MappingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    record_id_field: str = Field(pattern=FIELD_NAME)
    record_id_source: Literal["participant_code"] = "participant_code"
    event: str | None = Field(
        default=None, max_length=100, description="Longitudinal projects: unique_event_name"
    )
    repeating_instrument: str | None = Field(default=None, max_length=100)
    instance_rule: Literal["per_submission"] = "per_submission"
    fields: list[FieldMap] = Field(min_length=1, max_length=500)


class MappingTarget(BaseModel):
    form: str
    field_type: str
    validation: str


class MappingRead(BaseModel):
    connection_id: uuid.UUID
    document: MappingIn
    targets: dict[str, MappingTarget] = Field(
        description="What REDCap said about each mapped field when the mapping was saved"
    )
    validated_at: datetime


class PreviewRead(BaseModel):
    connection_id: uuid.UUID
    submission_id: uuid.UUID
    records: list[dict[str, Any]] = Field(description="The rows an import would send, as sent")
    instance_assigned: bool = Field(
        description="False: the instance shown is the one the next sync would assign"
    )
    routed_here: bool = Field(
        description="False: this submission's participant syncs through another connection"
    )
    status: SyncStatus | None


# ----- sync ------------------------------------------------------------------------------------
class ResyncIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    submission_id: uuid.UUID | None = Field(
        default=None, description="One failed submission; all failed ones when left out"
    )


class ResyncRead(BaseModel):
    reset: int
    submission_ids: list[uuid.UUID]


class SyncStateRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    submission_id: uuid.UUID
    status: SyncStatus
    record_id: str | None
    event: str | None
    instrument: str | None
    instance: int | None
    error: str | None = Field(description="REDCap's own message, for failed submissions")
    error_field: str | None
    attempts: int
    last_attempt_at: datetime | None
    synced_at: datetime | None


class SyncStatePage(BaseModel):
    items: list[SyncStateRead]
    next_cursor: str | None


# ----- participant import ----------------------------------------------------------------------
class ParticipantImportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    form: str = Field(min_length=1, max_length=100)
    participant_code_field: str | None = Field(
        default=None, max_length=100, description="Defaults to the record id field"
    )
    site_source: Literal["dag", "fixed"]
    site_id: uuid.UUID | None = Field(default=None, description="For site_source=fixed")
    dag_to_site: dict[str, str] = Field(
        default_factory=dict, description="unique_group_name -> site code (site_source=dag)"
    )
    dry_run: bool = False


class ImportedRecord(BaseModel):
    record_id: str
    participant_code: str | None
    site_code: str | None
    status: Literal["new", "already_enrolled", "rejected"]
    reason: str | None = None


class ParticipantImportReport(BaseModel):
    dry_run: bool
    total_records: int
    new: int
    already_enrolled: int
    rejected: int
    created: int
    records: list[ImportedRecord]


class ParticipantImportRead(BaseModel):
    """An import as a job: its status is its outbox row's; the report once it has run (a
    failed one with rejected records keeps its report; a problem lists what did not fit)."""

    id: uuid.UUID
    connection_id: uuid.UUID
    job_id: uuid.UUID | None
    status: JobStatus
    dry_run: bool
    created_at: datetime
    finished_at: datetime | None
    error: str | None
    problem: list[dict[str, Any]] | None
    report: ParticipantImportReport | None
