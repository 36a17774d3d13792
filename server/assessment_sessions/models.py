from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from server.core.models import Base, JSONType, text_enum, utcnow


class SessionStatus(enum.StrEnum):
    in_progress = "in_progress"
    completed = "completed"
    abandoned = "abandoned"


class AssessmentSession(Base):
    """One run of a battery by a participant. The id is the client's, so retries converge."""

    __tablename__ = "assessment_sessions"
    __table_args__ = (
        Index("ix_assessment_sessions_participant_started", "participant_id", "started_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    participant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("participants.id", ondelete="CASCADE")
    )
    study_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    battery_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("batteries.id", ondelete="RESTRICT"))
    status: Mapped[SessionStatus] = mapped_column(
        text_enum(SessionStatus, "session_status"), default=SessionStatus.in_progress
    )
    device: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    app_version: Mapped[str] = mapped_column(String(64), default="")
    client_started_at: Mapped[datetime]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    client_ended_at: Mapped[datetime | None] = mapped_column(default=None)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    # The scheduled visit it was started for (or matched to when it completed), if any.
    visit_occurrence_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("visit_occurrences.id", ondelete="SET NULL"), default=None
    )
    # The signature the session started under (server.consent); None in a study without
    # consent documents. Started before it was signed (an offline queue) if client_started_at
    # precedes its signed_at.
    consent_record_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("consent_records.id"), default=None
    )
