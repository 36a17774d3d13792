from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.core.models import Base, IdMixin, JSONType, utcnow


class TaskScore(IdMixin, Base):
    """A task of a submission as one scorer version computed it, beside what the client sent.

    Rows are added, never replaced: re-scoring with a new scorer version keeps the old rows,
    and the same version twice is one row (the unique constraint). The raw checksum and the
    module and scorer ids make each value traceable without another table.
    """

    __tablename__ = "task_scores"
    __table_args__ = (
        UniqueConstraint("submission_id", "position", "scorer_key", "scorer_version"),
    )

    submission_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE")
    )
    position: Mapped[int]
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("assessment_sessions.id", ondelete="CASCADE"), index=True
    )
    module_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("modules.id", ondelete="RESTRICT"))
    module_key: Mapped[str] = mapped_column(String(64))
    module_version: Mapped[int]
    scorer_key: Mapped[str] = mapped_column(String(64))
    scorer_version: Mapped[str] = mapped_column(String(32))
    # The submission's checksum (SHA-256 of its canonical JSON) when it was scored.
    raw_checksum: Mapped[str] = mapped_column(String(64))
    client_summary: Mapped[dict[str, Any]] = mapped_column(JSONType)
    server_summary: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # {metric: {client, server, diff, tolerance, mismatch}} for metrics both summaries have
    comparison: Mapped[dict[str, Any]] = mapped_column(JSONType)
    n_mismatches: Mapped[int]
    # Answers the scorer left out (unknown item ids, response codes): [{loc, type, value}]
    problems: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    computed_at: Mapped[datetime] = mapped_column(default=utcnow)


class QualityCheck(IdMixin, Base):
    """One data-quality rule evaluated on a session or one of its tasks: fired or quiet.

    Derived, not research data: a session's checks of a rule version are recomputed whole
    whenever one of its submissions is scored."""

    __tablename__ = "quality_checks"
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("assessment_sessions.id", ondelete="CASCADE"), index=True
    )
    scope: Mapped[str] = mapped_column(String(16))  # "task" or "session"
    submission_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), default=None
    )
    position: Mapped[int | None] = mapped_column(default=None)
    module_key: Mapped[str | None] = mapped_column(String(64), default=None)
    rule: Mapped[str] = mapped_column(String(64))
    rule_version: Mapped[str] = mapped_column(String(16))
    threshold: Mapped[dict[str, Any]] = mapped_column(JSONType)
    observed: Mapped[float | None] = mapped_column(default=None)
    fired: Mapped[bool]
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    computed_at: Mapped[datetime] = mapped_column(default=utcnow)


class StudyQualitySettings(Base):
    """A study's thresholds for the quality rules: {module_key or "*": {rule: {param: value}}}."""

    __tablename__ = "study_quality_settings"

    study_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True
    )
    thresholds: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
