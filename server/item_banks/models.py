from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.core.catalogue import PublicationStatus
from server.core.models import Base, IdMixin, JSONType, TimestampMixin, text_enum


class ItemBank(IdMixin, TimestampMixin, Base):
    """Questionnaire items: stem, coded response options, reverse scoring. Versioned."""

    __tablename__ = "item_banks"
    __table_args__ = (UniqueConstraint("key", "version"),)

    key: Mapped[str] = mapped_column(String(64))
    version: Mapped[int]
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # [{"item_id", "stem", "options": [{"code": int, "label"}], "reverse_scored": bool}]
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    status: Mapped[PublicationStatus] = mapped_column(
        text_enum(PublicationStatus, "publication_status"), default=PublicationStatus.draft
    )
    published_at: Mapped[datetime | None] = mapped_column(default=None)
