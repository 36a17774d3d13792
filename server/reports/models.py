from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, deferred, mapped_column

from server.core.models import Base, IdMixin, JSONType, text_enum, utcnow


class ReportKind(enum.StrEnum):
    participant = "participant"
    session = "session"
    study_progress = "study_progress"


class Report(IdMixin, Base):
    """One built (or building) PDF, keyed by a hash of what was asked and of the data it reads.

    The same request over the same data finds this row again (reused); new data is a new key,
    so a new row. Its job is the outbox row `job_id` (status, attempts, error). The PDF is
    kept in the row: a few tens of kB, written once, read by the download route.
    """

    __tablename__ = "reports"
    __table_args__ = (UniqueConstraint("study_id", "key"),)

    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    kind: Mapped[ReportKind] = mapped_column(text_enum(ReportKind, "report_kind"))
    # The participant, session or study it is about.
    subject_id: Mapped[uuid.UUID]
    # The sites it covers (who may read it): None for the whole study.
    site_ids: Mapped[list[str] | None] = mapped_column(JSONType, default=None)
    options: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    key: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    requested_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    built_at: Mapped[datetime | None] = mapped_column(default=None)
    pages: Mapped[int | None] = mapped_column(default=None)
    size_bytes: Mapped[int | None] = mapped_column(default=None)
    # Deferred: status reads never load the file.
    pdf: Mapped[bytes | None] = deferred(mapped_column(LargeBinary, default=None))
