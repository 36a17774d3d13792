from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.core.models import Base, JSONType, utcnow


class Submission(Base):
    """An acknowledged submission: the raw bytes as received, with their checksum."""

    __tablename__ = "submissions"
    __table_args__ = (UniqueConstraint("participant_id", "client_submission_id"),)

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
