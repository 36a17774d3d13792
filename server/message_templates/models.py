"""Message templates: per study, kind and language; Jinja2 text rendered in a sandbox."""

from __future__ import annotations

import enum
import uuid

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.core.models import Base, IdMixin, TimestampMixin, text_enum


class TemplateKind(enum.StrEnum):
    invitation = "invitation"
    reminder = "reminder"
    missed_visit = "missed_visit"
    consent_update = "consent_update"


class MessageTemplate(IdMixin, TimestampMixin, Base):
    __tablename__ = "message_templates"
    __table_args__ = (UniqueConstraint("study_id", "kind", "language"),)

    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    kind: Mapped[TemplateKind] = mapped_column(text_enum(TemplateKind, "template_kind"))
    # BCP 47 ("en", "de"): the participant's language picks it; the study's "en" is the fallback.
    language: Mapped[str] = mapped_column(String(16))
    # The email subject and the push title; SMS sends the body alone.
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
