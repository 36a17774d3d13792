"""Coordinator tasks: work a person has to do, such as following up a missed visit."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.core.models import Base, IdMixin, text_enum, utcnow


class TaskKind(enum.StrEnum):
    missed_visit = "missed_visit"


class TaskStatus(enum.StrEnum):
    open = "open"
    closed = "closed"


class CoordinatorTask(IdMixin, Base):
    __tablename__ = "coordinator_tasks"
    __table_args__ = (
        # One task per missed occurrence, however often the dispatch finds it.
        UniqueConstraint("occurrence_id", "kind"),
        Index("ix_coordinator_tasks_study_status", "study_id", "status", "created_at"),
    )

    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    site_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    participant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("participants.id", ondelete="CASCADE")
    )
    occurrence_id: Mapped[uuid.UUID]
    kind: Mapped[TaskKind] = mapped_column(text_enum(TaskKind, "coordinator_task_kind"))
    # What the task is about, in words staff read (participant code and visit label only).
    title: Mapped[str] = mapped_column(String(300))
    status: Mapped[TaskStatus] = mapped_column(
        text_enum(TaskStatus, "coordinator_task_status"), default=TaskStatus.open
    )
    note: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(default=None)
    closed_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
