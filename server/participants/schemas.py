from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from server.participants.models import ParticipantStatus
from server.studies.schemas import check_timezone

PARTICIPANT_CODE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
PHONE = r"^\+?[0-9 ()./-]{6,31}$"
LANGUAGE = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"  # BCP 47 as apps report it: en, pt-BR


class PushSubscription(BaseModel):
    """A Web Push subscription as the browser's PushManager.subscribe() gives it."""

    endpoint: str = Field(pattern=r"^https://", max_length=2000)
    keys: dict[str, str]


class ContactIn(BaseModel):
    email: EmailStr | None = None
    phone: str | None = Field(default=None, pattern=PHONE)
    # A number without "+" is read as this region's (ISO 3166, e.g. "DE"); default: settings.
    phone_region: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    push_subscription: PushSubscription | None = None
    email_opt_out: bool = False
    sms_opt_out: bool = False
    push_opt_out: bool = False


class ContactRead(BaseModel):
    participant_id: uuid.UUID
    email: str | None
    phone: str | None
    has_push_subscription: bool
    email_opt_out: bool
    sms_opt_out: bool
    push_opt_out: bool
    updated_at: datetime


class ParticipantCreate(BaseModel):
    site_id: uuid.UUID
    participant_code: str = Field(pattern=PARTICIPANT_CODE)
    timezone: str = "UTC"
    language: str | None = Field(default=None, pattern=LANGUAGE, description="BCP 47, e.g. en")
    status: ParticipantStatus = ParticipantStatus.enrolled
    enrolled_at: datetime | None = None
    contact: ContactIn | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        return check_timezone(value)


class ParticipantUpdate(BaseModel):
    site_id: uuid.UUID | None = None
    status: ParticipantStatus | None = None
    timezone: str | None = None
    language: str | None = Field(default=None, pattern=LANGUAGE)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)


class ParticipantRead(BaseModel):
    """What staff lists show: no contact details, ever."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    study_id: uuid.UUID
    site_id: uuid.UUID
    participant_code: str
    status: ParticipantStatus
    timezone: str
    language: str | None
    enrolled_at: datetime
    created_at: datetime


class ParticipantEnrolled(ParticipantRead):
    """Returned once, at enrolment: the code is shown here and never again."""

    access_code: str
    access_code_expires_at: datetime


class ParticipantPage(BaseModel):
    items: list[ParticipantRead]
    next_cursor: str | None


class ImportRowError(BaseModel):
    row: int
    participant_code: str | None
    errors: list[str]


class ImportReport(BaseModel):
    dry_run: bool
    total_rows: int
    accepted: int
    rejected: list[ImportRowError]
    created: int


class ParticipantRef(BaseModel):
    """Who a participant token speaks for: what the device paths need, nothing more."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    study_id: uuid.UUID
    site_id: uuid.UUID
    status: ParticipantStatus
