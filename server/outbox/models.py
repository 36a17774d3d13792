from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from server.core.models import Base, IdMixin, JSONType, utcnow


class OutboxEvent(IdMixin, Base):
    """Work for the worker tier, written in the same transaction as the data it is about.

    A relay publishes unpublished rows after commit; nothing is enqueued inside a transaction.
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
            postgresql_where=text("completed_at IS NULL"),
        ),
        # The relay's two questions, each its own index: rows waiting behind a lease (a
        # backlog REDCap is slow on, archive rows no worker has taken yet) are not read again
        # by every poll for new rows, nor new rows by the look for lapsed leases.
        Index(
            "ix_outbox_events_unpublished",
            "topic",
            "created_at",
            "id",
            postgresql_where=text("completed_at IS NULL AND published_at IS NULL"),
        ),
        Index(
            "ix_outbox_events_leased",
            "lease_until",
            postgresql_where=text("completed_at IS NULL AND published_at IS NOT NULL"),
        ),
    )

    topic: Mapped[str] = mapped_column(String(64))
    # Ids only: the task fetches what it needs again.
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(default=None)
    publish_attempts: Mapped[int] = mapped_column(default=0)
    # Published but not reported done by then: the relay publishes it again (a message lost
    # with a Redis restart, or held by a worker that died, is sent once more).
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(String(2000), default=None)
    # The submission or other row this is about, for admins tracing a backlog.
    subject_id: Mapped[uuid.UUID | None] = mapped_column(default=None, index=True)
