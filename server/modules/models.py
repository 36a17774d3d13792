from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.core.catalogue import PublicationStatus
from server.core.models import Base, IdMixin, JSONType, TimestampMixin, text_enum


class ModuleKind(enum.StrEnum):
    cognitive = "cognitive"
    questionnaire = "questionnaire"


class Module(IdMixin, TimestampMixin, Base):
    """A versioned task definition; a published version never changes."""

    __tablename__ = "modules"
    __table_args__ = (UniqueConstraint("key", "version"),)

    key: Mapped[str] = mapped_column(String(64))
    version: Mapped[int]
    kind: Mapped[ModuleKind] = mapped_column(text_enum(ModuleKind, "module_kind"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # JSON Schemas (draft 2020-12) for one trial record and for the task summary.
    trial_schema: Mapped[dict[str, Any]] = mapped_column(JSONType)
    summary_schema: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # [{"key", "unit", "label", "derived_from": {"op", "field", "where"} | None}]
    metrics: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    item_bank_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("item_banks.id", ondelete="RESTRICT"), default=None
    )
    status: Mapped[PublicationStatus] = mapped_column(
        text_enum(PublicationStatus, "publication_status"), default=PublicationStatus.draft
    )
    published_at: Mapped[datetime | None] = mapped_column(default=None)
