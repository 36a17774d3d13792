from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

CLIENT_ID = r"^[A-Za-z0-9._:-]{1,128}$"


class TaskIn(BaseModel):
    module_key: str = Field(min_length=1, max_length=64)
    module_version: int = Field(ge=1)
    summary: dict[str, Any]
    trials: list[dict[str, Any]] = Field(max_length=20_000)


class ClientEvent(BaseModel):
    """Something the app saw during the session that bears on data quality."""

    type: str = Field(
        min_length=1,
        max_length=64,
        description="focus_lost / app_backgrounded count towards the focus_loss check; "
        "focus_gained, app_foregrounded and others are kept as sent",
    )
    at: datetime | None = None
    module_key: str | None = Field(default=None, max_length=64)


class SubmissionIn(BaseModel):
    client_submission_id: str = Field(
        pattern=CLIENT_ID, description="The idempotency key: the client's id for this submission"
    )
    session_id: uuid.UUID
    tasks: list[TaskIn] = Field(min_length=1, max_length=50)
    client_submitted_at: datetime | None = Field(
        default=None, description="The device's clock when sent: the clock_drift check's input"
    )
    events: list[ClientEvent] = Field(default_factory=list, max_length=1000)


class Receipt(BaseModel):
    submission_id: uuid.UUID
    client_submission_id: str
    session_id: uuid.UUID
    checksum: str
    received_at: datetime


class TaskRead(BaseModel):
    position: int
    module_key: str
    module_version: int
    n_trials: int
    summary: dict[str, Any]
    trials: list[dict[str, Any]]


class SubmissionRead(Receipt):
    participant_id: uuid.UUID
    study_id: uuid.UUID
    tasks: list[TaskRead]
