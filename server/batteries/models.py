from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.core.catalogue import PublicationStatus
from server.core.models import Base, IdMixin, TimestampMixin, text_enum


class Battery(IdMixin, TimestampMixin, Base):
    """An ordered list of module versions that a study's visits run."""

    __tablename__ = "batteries"
    __table_args__ = (UniqueConstraint("study_id", "key", "version"),)

    study_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(default=1)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[PublicationStatus] = mapped_column(
        text_enum(PublicationStatus, "publication_status"), default=PublicationStatus.draft
    )
    published_at: Mapped[datetime | None] = mapped_column(default=None)


class BatteryModule(Base):
    __tablename__ = "battery_modules"

    battery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("batteries.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(primary_key=True)
    module_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("modules.id", ondelete="RESTRICT"))
