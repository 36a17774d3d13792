from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.core.models import Base, IdMixin, JSONType, text_enum, utcnow


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"  # failed for good: see its dead letter
    retrying = "retrying"


class Job(IdMixin, Base):
    """A unit of background work as users and admins see it; Celery's own state is not kept.

    One row per outbox event (or per request that starts work directly, such as an export).
    """

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_created", "status", "created_at"),)

    kind: Mapped[str] = mapped_column(String(64))
    status: Mapped[JobStatus] = mapped_column(
        text_enum(JobStatus, "job_status"), default=JobStatus.queued
    )
    study_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), default=None, index=True
    )
    subject_id: Mapped[uuid.UUID | None] = mapped_column(default=None, index=True)
    outbox_event_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("outbox_events.id", ondelete="SET NULL"), default=None, unique=True
    )
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    progress: Mapped[int] = mapped_column(default=0)
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    result_location: Mapped[str | None] = mapped_column(String(1024), default=None)
    celery_task_id: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class DeadLetter(IdMixin, Base):
    """A task that failed for good. Redis drops rejected messages; this keeps them."""

    __tablename__ = "dead_letters"

    job_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), default=None, index=True
    )
    task_name: Mapped[str] = mapped_column(String(200))
    args: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    error: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    failed_at: Mapped[datetime] = mapped_column(default=utcnow)
    rerun_at: Mapped[datetime | None] = mapped_column(default=None)
    rerun_job_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
