from __future__ import annotations

import uuid
from datetime import datetime
from zoneinfo import available_timezones

from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.studies.models import StudyRole, StudyStatus

_CODE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_TIMEZONES = frozenset(available_timezones())


def check_timezone(value: str) -> str:
    if value not in _TIMEZONES:
        raise ValueError("must be an IANA time zone such as Europe/London")
    return value


class StudyCreate(BaseModel):
    code: str = Field(min_length=1, max_length=64, pattern=_CODE)
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)


class StudyUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    status: StudyStatus | None = None


class StudyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    code: str
    name: str
    description: str
    status: StudyStatus
    created_at: datetime


class SiteCreate(BaseModel):
    code: str = Field(min_length=1, max_length=64, pattern=_CODE)
    name: str = Field(min_length=1, max_length=200)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        return check_timezone(value)


class SiteUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    timezone: str | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)


class SiteRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    study_id: uuid.UUID
    code: str
    name: str
    timezone: str


_SITE_IDS = (
    "The sites of this study the member is limited to: they see and manage only these "
    "sites' participants, sessions and submissions, and cannot change the whole study. "
    "Empty for the whole study."
)


class MemberCreate(BaseModel):
    user_id: uuid.UUID
    role: StudyRole
    site_ids: list[uuid.UUID] = Field(default_factory=list, max_length=500, description=_SITE_IDS)


class MemberUpdate(BaseModel):
    role: StudyRole | None = None
    site_ids: list[uuid.UUID] | None = Field(
        default=None, max_length=500, description=_SITE_IDS + " Left out: unchanged."
    )


class MemberRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    user_id: uuid.UUID
    study_id: uuid.UUID
    role: StudyRole
    site_ids: list[uuid.UUID] = Field(description="Empty: the whole study")
    email: str
    display_name: str
