"""Protocols (versioned, immutable once published) and the occurrences they materialise into.

visit_occurrences is the table every reader of "what is due" hits: one row per occurrence of a
visit for a participant, windows in UTC, and a partial index on window_start over the rows
still pending, so "due now" is one index range scan however long the study has run.
"""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime, time

from sqlalchemy import (
    Boolean,
    Date,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    Time,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.core.catalogue import PublicationStatus
from server.core.models import Base, IdMixin, TimestampMixin, text_enum, utcnow


class AppliesTo(enum.StrEnum):
    new_enrolments = "new_enrolments"  # participants enrolled after its publication
    everyone_from = "everyone_from"  # everyone, for windows opening from effective_from


class Repeat(enum.StrEnum):
    none = "none"
    daily = "daily"
    weekly = "weekly"


class VisitStatus(enum.StrEnum):
    upcoming = "upcoming"
    open = "open"
    completed = "completed"
    missed = "missed"
    skipped = "skipped"
    cancelled = "cancelled"


PENDING = (VisitStatus.upcoming, VisitStatus.open)
PENDING_SQL = "status IN ('upcoming', 'open')"


class ScheduleProtocol(IdMixin, TimestampMixin, Base):
    """One version of a study's visit protocol."""

    __tablename__ = "schedule_protocols"
    __table_args__ = (UniqueConstraint("study_id", "version"),)

    study_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int]
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[PublicationStatus] = mapped_column(
        text_enum(PublicationStatus, "publication_status"), default=PublicationStatus.draft
    )
    applies_to: Mapped[AppliesTo] = mapped_column(
        text_enum(AppliesTo, "protocol_applies_to"), default=AppliesTo.new_enrolments
    )
    effective_from: Mapped[datetime | None] = mapped_column(default=None)
    published_at: Mapped[datetime | None] = mapped_column(default=None)


class ScheduleVisit(IdMixin, Base):
    """A visit of a protocol: when it falls relative to its anchor, and its window."""

    __tablename__ = "schedule_visits"
    __table_args__ = (UniqueConstraint("protocol_id", "key"),)

    protocol_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("schedule_protocols.id", ondelete="CASCADE")
    )
    position: Mapped[int]
    key: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(200))
    # None: the participant's enrolment; else the key of the visit whose completion anchors it.
    anchor_visit_key: Mapped[str | None] = mapped_column(String(64), default=None)
    offset_days: Mapped[int] = mapped_column(default=0)
    # Local wall-clock time the visit is due at, in the participant's time zone.
    time_of_day: Mapped[time] = mapped_column(Time(), default=time(9, 0))
    window_before_minutes: Mapped[int] = mapped_column(default=0)
    window_after_minutes: Mapped[int] = mapped_column(default=24 * 60)
    battery_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("batteries.id", ondelete="RESTRICT"))
    repeat: Mapped[Repeat] = mapped_column(text_enum(Repeat, "visit_repeat"), default=Repeat.none)
    repeat_count: Mapped[int] = mapped_column(default=1)
    required: Mapped[bool] = mapped_column(Boolean, default=True)


class ScheduleAssignment(Base):
    """Which protocol version a participant follows, and the zone and anchor their rows were
    computed from (a participant whose zone no longer matches is recomputed by the sweep).
    Written in bulk beside visit_occurrences, and like it without foreign keys."""

    __tablename__ = "schedule_assignments"

    participant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    study_id: Mapped[uuid.UUID] = mapped_column(index=True)
    protocol_id: Mapped[uuid.UUID]
    timezone: Mapped[str] = mapped_column(String(64))
    anchor_date: Mapped[date] = mapped_column(Date())
    assigned_at: Mapped[datetime] = mapped_column(default=utcnow)


class VisitOccurrence(Base):
    """One occurrence of a visit for a participant. Written in bulk (server.schedules.
    materialise), hundreds of thousands of rows at once, so it carries no foreign key: each
    would cost a lookup and a share lock per row (a quarter of the load, measured), and
    participants and studies are withdrawn or archived, never deleted (the outbox made the
    same trade in 0014). Three indexes besides the key, each one a cost of every row."""

    __tablename__ = "visit_occurrences"
    __table_args__ = (
        # A participant's schedule; not unique on (visit, occurrence): a unique key of three
        # columns cost twice this one's time in the bulk load, and the assignment row already
        # makes materialising a participant happen once.
        Index("ix_visit_occurrences_participant", "participant_id"),
        # "What is due now": pending rows only, so the index stays the size of what is open.
        Index("ix_visit_occurrences_due", "window_start", postgresql_where=text(PENDING_SQL)),
        # Reminders before a window closes and after it closed unanswered (server.reminders).
        Index(
            "ix_visit_occurrences_closing",
            "window_end",
            postgresql_where=text("status IN ('upcoming', 'open', 'missed')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, server_default=text("gen_random_uuid()"), default=uuid.uuid4
    )
    participant_id: Mapped[uuid.UUID]
    study_id: Mapped[uuid.UUID]
    site_id: Mapped[uuid.UUID]
    protocol_id: Mapped[uuid.UUID]
    visit_id: Mapped[uuid.UUID]
    occurrence: Mapped[int] = mapped_column(SmallInteger)
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    status: Mapped[VisitStatus] = mapped_column(
        text_enum(VisitStatus, "visit_status"), default=VisitStatus.upcoming
    )
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
    session_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    # Why a coordinator (or a withdrawal) set the status; the audit trail keeps the history.
    status_reason: Mapped[str | None] = mapped_column(String(500), default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
