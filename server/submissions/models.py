from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from server.core.models import Base, JSONType, text_enum, utcnow


class SubmissionStatus(enum.StrEnum):
    # Its tasks fit their modules: stored as tasks, archived, synced (and scored).
    accepted = "accepted"
    # Stored as sent (raw bytes, checksum, problems) but held back from sync and exports until
    # a reprocess finds it clean: the device's data is kept, never refused.
    quarantined = "quarantined"


class Submission(Base):
    """An acknowledged submission: the raw bytes as received, with their checksum.

    A quarantined one has no task rows: what reads submission_tasks (REDCap, exports,
    scoring) sees accepted data only, without each reader having to filter.
    """

    __tablename__ = "submissions"
    __table_args__ = (
        UniqueConstraint("participant_id", "client_submission_id"),
        # The coordinators' quarantine list of a study, oldest first; accepted rows (nearly
        # all of them) stay out of it.
        Index(
            "ix_submissions_quarantined",
            "study_id",
            "received_at",
            "id",
            postgresql_where=text("status = 'quarantined'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    # The idempotency key: the client's own id for this submission.
    client_submission_id: Mapped[str] = mapped_column(String(128))
    participant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("participants.id", ondelete="CASCADE")
    )
    study_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("assessment_sessions.id", ondelete="CASCADE"), index=True
    )
    checksum: Mapped[str] = mapped_column(String(64))
    raw_payload: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[SubmissionStatus] = mapped_column(
        text_enum(SubmissionStatus, "submission_status"),
        default=SubmissionStatus.accepted,
        server_default=SubmissionStatus.accepted.value,
    )
    # What kept it in quarantine, each with its place (schemas.Problem); None once accepted.
    problems: Mapped[list[dict[str, Any]] | None] = mapped_column(
        # None is SQL NULL (not JSON null), as the ingest statement writes it.
        JSONB(none_as_null=True),
        default=None,
    )
    # The last reprocess, and the staff user who asked for it.
    reprocessed_at: Mapped[datetime | None] = mapped_column(default=None)
    reprocessed_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )


class SubmissionTask(Base):
    """One module's results in a submission: its summary and its trials, in order.

    Trials are kept as one JSON array per task rather than a row per trial: a submission is
    written as a handful of rows, and exports read trials per trial with jsonb_array_elements.
    """

    __tablename__ = "submission_tasks"

    submission_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    module_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("modules.id", ondelete="RESTRICT"))
    module_key: Mapped[str] = mapped_column(String(64))
    module_version: Mapped[int]
    summary: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # Plain `json` on PostgreSQL, not `jsonb`: kept as written, not re-parsed on insert;
    # exports walk it with json_array_elements.
    trials: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    n_trials: Mapped[int]
