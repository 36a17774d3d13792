"""Reminder rules as staff configure them, and reminder messages as coordinators follow them
(the participant's code and the visit's label, never an address or the text sent)."""

from __future__ import annotations

import uuid
from datetime import datetime, time
from typing import Annotated, Self

from pydantic import BaseModel, BeforeValidator, Field, PlainSerializer, model_validator

from server.reminders.models import Channel, MessageKind, MessageStatus, Trigger

HOURS_BEFORE_CLOSE_MAX = 366 * 24


def _hh_mm(value: object) -> object:
    """ "HH:MM" (24-hour) only: a quiet hour is a wall-clock minute, no seconds or zone."""
    if isinstance(value, time):
        return value
    if isinstance(value, str):
        hours, sep, minutes = value.partition(":")
        well_formed = sep and len(hours) == 2 == len(minutes) and (hours + minutes).isdigit()
        if well_formed and int(hours) < 24 and int(minutes) < 60:
            return time(int(hours), int(minutes))
    raise ValueError('a wall-clock time "HH:MM", 00:00 to 23:59')


HHMM = Annotated[
    time,
    BeforeValidator(_hh_mm),
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str),
    Field(json_schema_extra={"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"}),
]


class RuleSettings(BaseModel):
    """A rule's settings, checked together (POST as sent, PATCH merged with the rule)."""

    trigger: Trigger
    hours_before_close: int | None = Field(
        default=None,
        ge=0,
        le=HOURS_BEFORE_CLOSE_MAX,
        description="before_close only (> 0): how many hours before the window closes",
    )
    channels: list[Channel] = Field(
        default_factory=lambda: [Channel.email],
        min_length=1,
        max_length=len(Channel),
        description="Distinct, in order of preference: the first the participant can receive",
    )
    quiet_start: HHMM = Field(default=time(21, 0), description="Participant's local time")
    quiet_end: HHMM = Field(default=time(8, 0), description="Before start: spans midnight")
    stale_after_minutes: int = Field(
        default=360, ge=1, le=7 * 24 * 60, description="Older than this when found: skipped"
    )
    escalate_to_sms_after_hours: int | None = Field(
        default=None, ge=1, le=168, description="Only when email is the first channel"
    )
    active: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.trigger == Trigger.before_close:
            if not self.hours_before_close:
                raise ValueError("hours_before_close: a before_close rule needs it above 0")
        elif self.hours_before_close:
            raise ValueError(f"hours_before_close: only for before_close, not {self.trigger}")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channels: each channel once")
        if self.escalate_to_sms_after_hours is not None and self.channels[0] != Channel.email:
            raise ValueError("escalate_to_sms_after_hours: only when email is the first channel")
        return self


class RuleCreate(RuleSettings):
    visit_id: uuid.UUID = Field(description="A visit of one of this study's protocols")


class RuleUpdate(BaseModel):
    """Fields to change; the rule as changed must still hold together (422 otherwise)."""

    trigger: Trigger | None = None
    hours_before_close: int | None = Field(default=None, ge=0, le=HOURS_BEFORE_CLOSE_MAX)
    channels: list[Channel] | None = Field(default=None, min_length=1, max_length=len(Channel))
    quiet_start: HHMM | None = None
    quiet_end: HHMM | None = None
    stale_after_minutes: int | None = Field(default=None, ge=1, le=7 * 24 * 60)
    escalate_to_sms_after_hours: int | None = Field(default=None, ge=1, le=168)
    active: bool | None = None


class RuleRead(RuleSettings):
    id: uuid.UUID
    study_id: uuid.UUID
    visit_id: uuid.UUID
    visit_label: str | None
    hours_before_close: int | None
    created_at: datetime
    updated_at: datetime


class MessageRead(BaseModel):
    """One message's delivery, for the coordinator: never the address or the text."""

    id: uuid.UUID
    study_id: uuid.UUID
    participant_id: uuid.UUID
    participant_code: str
    occurrence_id: uuid.UUID
    visit_label: str | None
    rule_id: uuid.UUID
    trigger: Trigger | None = Field(description="None if the rule was deleted since")
    channel: Channel
    kind: MessageKind
    status: MessageStatus
    attempts: int
    provider: str | None
    error: str | None = Field(description="The provider's reason for the last failure")
    moment: datetime
    send_at: datetime
    sent_at: datetime | None
    created_at: datetime
