from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field


class AccessCodeIssued(BaseModel):
    participant_id: uuid.UUID
    access_code: str
    expires_at: datetime


class ParticipantAuthRequest(BaseModel):
    access_code: str = Field(min_length=4, max_length=32)


class ParticipantToken(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    participant_id: uuid.UUID
    study_id: uuid.UUID
