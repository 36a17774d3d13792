"""The outbox row: one piece of background work, from the request that wrote it to its end.

There is no other record of it: the row is the job users see (/api/jobs), the message's only
argument, and, once failed for good, the dead letter an administrator re-runs.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from server.core.models import Base, IdMixin, JSONType, text_enum, utcnow


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    retrying = "retrying"  # a transient error: waiting for due_at to run again
    succeeded = "succeeded"
    failed = "failed"  # for good: a dead letter until an administrator re-runs it


class OutboxEvent(IdMixin, Base):
    """Work for the worker tier, written in the same transaction as the data it is about.

    Not finished and past `due_at`, the relay publishes its id (again): the first time, after
    a transient error's backoff, or when its message was not run within a lease (Redis lost
    it); running with its run lock free (its worker died, server.outbox.liveness), at once.
    That is the one way work comes back.
    """

    __tablename__ = "outbox_events"
    __table_args__ = (
        # Pending rows of one topic, oldest first: the REDCap claim's look for submissions
        # waiting for their first sync (server.redcap.claim), and the backlog view's scan.
        Index(
            "ix_outbox_events_pending_by_topic",
            "topic",
            "created_at",
            "id",
            postgresql_where=text("finished_at IS NULL"),
        ),
        # The relay's one question: which unfinished rows are due.
        Index("ix_outbox_events_due", "due_at", postgresql_where=text("finished_at IS NULL")),
        # The dead letters, newest first. Not an index on status: a row's every step would
        # rewrite it, and ingest would pay for it on each submission's rows.
        Index("ix_outbox_events_failed", "finished_at", postgresql_where=text("status = 'failed'")),
    )

    topic: Mapped[str] = mapped_column(String(64))
    # Ids only: the task fetches what it needs again.
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # The submission or other row this is about, and its study (who may see the job).
    subject_id: Mapped[uuid.UUID | None] = mapped_column(default=None, index=True)
    # No foreign key (as on subject_id): each submission writes three rows, and a key would add
    # a lookup and a share lock on the study row to each, at ingest.
    study_id: Mapped[uuid.UUID | None] = mapped_column(default=None, index=True)
    status: Mapped[JobStatus] = mapped_column(
        text_enum(JobStatus, "job_status"), default=JobStatus.queued
    )
    # Runs started; bounded by TASK_MAX_RETRIES + 1.
    attempts: Mapped[int] = mapped_column(default=0)
    progress: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    result_location: Mapped[str | None] = mapped_column(String(1024), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the relay publishes it, if it is not finished by then.
    due_at: Mapped[datetime] = mapped_column(default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    # The last time an administrator put it back in the queue after it failed.
    rerun_at: Mapped[datetime | None] = mapped_column(default=None)
