"""Coordinator tasks as staff read and close them: a participant's code and a visit's label,
never contact details."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from server.coordinator_tasks.models import TaskKind, TaskStatus


class TaskRead(BaseModel):
    id: uuid.UUID
    study_id: uuid.UUID
    site_id: uuid.UUID = Field(description="The participant's site now")
    participant_id: uuid.UUID
    participant_code: str
    occurrence_id: uuid.UUID
    visit_label: str | None = Field(description="None if the visit is gone")
    kind: TaskKind
    title: str
    status: TaskStatus
    note: str | None
    created_at: datetime
    closed_at: datetime | None
    closed_by: uuid.UUID | None


Note = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class TaskClose(BaseModel):
    note: Note = Field(description="What was done (kept on the task and in the audit trail)")
