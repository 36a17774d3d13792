from __future__ import annotations

import uuid
from datetime import date, datetime, time
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.core.catalogue import KEY, PublicationStatus
from server.schedules.models import AppliesTo, Repeat, VisitStatus

MINUTES_MAX = 366 * 24 * 60


class VisitIn(BaseModel):
    key: str = Field(pattern=KEY)
    label: str = Field(min_length=1, max_length=200)
    anchor_visit_key: str | None = Field(
        default=None, description="None: enrolment; else the visit whose completion anchors it"
    )
    offset_days: int = Field(default=0, ge=0, le=3660)
    time_of_day: time = Field(default=time(9, 0), description="Local time the visit is due")
    window_before_minutes: int = Field(default=0, ge=0, le=MINUTES_MAX)
    window_after_minutes: int = Field(default=24 * 60, ge=1, le=MINUTES_MAX)
    battery_id: uuid.UUID
    repeat: Repeat = Repeat.none
    repeat_count: int = Field(default=1, ge=1, le=366)
    required: bool = True


class VisitRead(VisitIn):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    position: int


class ProtocolCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    visits: list[VisitIn] = Field(min_length=1, max_length=100)


class ProtocolUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    visits: list[VisitIn] | None = Field(default=None, min_length=1, max_length=100)


class ProtocolPublish(BaseModel):
    applies_to: AppliesTo = Field(
        default=AppliesTo.new_enrolments,
        description="new_enrolments: participants enrolled after publication; everyone_from: "
        "every participant, for windows opening from effective_from",
    )
    effective_from: datetime | None = None

    @model_validator(mode="after")
    def _date_for_everyone(self) -> Self:
        if self.applies_to == AppliesTo.everyone_from and self.effective_from is None:
            raise ValueError("effective_from is required when applies_to is everyone_from")
        if self.effective_from is not None and self.effective_from.tzinfo is None:
            raise ValueError("effective_from needs a time zone")
        return self


class ProtocolRead(BaseModel):
    id: uuid.UUID
    study_id: uuid.UUID
    version: int
    name: str
    status: PublicationStatus
    applies_to: AppliesTo
    effective_from: datetime | None
    published_at: datetime | None
    visits: list[VisitRead]


class OccurrenceRead(BaseModel):
    id: uuid.UUID = Field(description="The visit_id a session is started for")
    participant_id: uuid.UUID
    visit_key: str
    label: str
    battery_id: uuid.UUID
    required: bool
    occurrence: int
    window_start: datetime
    window_end: datetime
    status: VisitStatus
    completed_at: datetime | None
    session_id: uuid.UUID | None
    status_reason: str | None


class MySchedule(BaseModel):
    timezone: str
    due_now: list[OccurrenceRead]
    next: list[OccurrenceRead]


class OverrideIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


class MoveIn(OverrideIn):
    window_start: datetime
    window_end: datetime

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.window_start.tzinfo is None or self.window_end.tzinfo is None:
            raise ValueError("window times need a time zone")
        if self.window_end <= self.window_start:
            raise ValueError("window_end must be after window_start")
        return self


class ReopenIn(OverrideIn):
    window_end: datetime | None = Field(
        default=None, description="When the reopened window closes (default: a day from now)"
    )


class AnchorIn(OverrideIn):
    anchor_date: date = Field(description="The new enrolment anchor, a local date")


OverrideKind = Literal["move", "skip", "reopen", "anchor"]
