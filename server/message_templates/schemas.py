from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, computed_field

from server.message_templates.models import TemplateKind
from server.message_templates.render import PLACEHOLDERS
from server.participants.schemas import LANGUAGE

# An SMS of a few segments, an email of a few paragraphs: a template is never a document.
BODY_MAX = 5000


class TemplateCreate(BaseModel):
    kind: TemplateKind
    language: str = Field(pattern=LANGUAGE, max_length=16, description="BCP 47, e.g. en, pt-BR")
    subject: str = Field(
        min_length=1, max_length=200, description="Email subject and push title (Jinja2 text)"
    )
    body: str = Field(min_length=1, max_length=BODY_MAX, description="Jinja2 text")


class TemplateUpdate(BaseModel):
    """The text only: another kind or language is another template."""

    subject: str | None = Field(default=None, min_length=1, max_length=200)
    body: str | None = Field(default=None, min_length=1, max_length=BODY_MAX)


class TemplateRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    study_id: uuid.UUID
    kind: TemplateKind
    language: str
    subject: str
    body: str
    created_at: datetime
    updated_at: datetime

    @computed_field(description="The placeholders this kind offers, e.g. {{ participant_code }}")
    def placeholders(self) -> list[str]:
        return sorted(PLACEHOLDERS[self.kind])


class PreviewRequest(BaseModel):
    participant_id: uuid.UUID = Field(description="A participant of the template's study")


class PreviewRead(BaseModel):
    subject: str
    body: str
