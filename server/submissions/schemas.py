from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from server.submissions.models import SubmissionStatus

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


class Problem(BaseModel):
    """Why a submission is quarantined, at one place of its body."""

    task_index: int | None = Field(description="The task's position in `tasks`")
    module_key: str | None
    module_version: int | None = Field(description="The version the task says it is")
    trial_index: int | None = Field(
        description="The trial's position in the task's `trials` (not its trial_index field), "
        "when the problem is in a trial"
    )
    field: str = Field(description='Where inside the task, e.g. "trials[7].rt_ms"')
    message: str
    rule: str = Field(
        description="Which check: schema_<keyword> (the module's JSON Schema), trial_order, "
        "unknown_module (not in the session's battery), duplicate (a module twice)"
    )
    loc: list[str | int] = Field(description="The same place as a 422's details loc")


class Receipt(BaseModel):
    submission_id: uuid.UUID
    client_submission_id: str
    session_id: uuid.UUID
    checksum: str
    received_at: datetime
    status: SubmissionStatus = Field(
        description="accepted, or quarantined (HTTP 202): stored as sent, held back from "
        "REDCap and exports until a coordinator reprocesses it; the device may delete its copy"
    )
    problems: list[Problem] = Field(description="Why it is quarantined; empty when accepted")


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
    reprocessed_at: datetime | None
    reprocessed_by: uuid.UUID | None
    tasks: list[TaskRead] = Field(
        description="The stored tasks; for a quarantined submission (which has none stored), "
        "the tasks as its body sent them"
    )


class SubmissionListItem(BaseModel):
    """A submission in a study's list (the quarantine list): where it came from, what is wrong."""

    submission_id: uuid.UUID
    client_submission_id: str
    participant_id: uuid.UUID
    session_id: uuid.UUID
    checksum: str
    received_at: datetime
    status: SubmissionStatus
    problems: list[Problem]
    reprocessed_at: datetime | None
    reprocessed_by: uuid.UUID | None


class SubmissionPage(BaseModel):
    items: list[SubmissionListItem]
    next_cursor: str | None


ModuleKey = Annotated[str, Field(min_length=1, max_length=64)]
ModuleVersion = Annotated[int, Field(ge=1, le=2**31 - 1)]


class ReprocessIn(BaseModel):
    """Which module versions a quarantined submission's tasks are checked against again."""

    module_versions: Literal["battery", "latest"] | dict[ModuleKey, ModuleVersion] = Field(
        default="battery",
        description='"battery": the versions the session\'s battery names (after a server '
        'fix); "latest": for each module of the battery, its newest published version (after '
        'a corrected version is published); or {"module_key": version, ...} for the named '
        "modules (published versions of the battery's modules), the battery's for the others. "
        "Accepted tasks are stored under the version they were checked against; the raw body "
        "and its checksum never change.",
        examples=["latest", {"stroop": 2}],
    )
