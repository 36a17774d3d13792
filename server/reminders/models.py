"""Reminder rules per protocol visit, the messages they become, and the dispatch watermark.

A message is one (visit occurrence, rule, channel) under a unique key: however many beats,
ticks or retried tasks find it due, it exists once, and its row records what became of it.
Written in bulk by the dispatch tick (up to tens of thousands a minute), so like
visit_occurrences it carries no foreign keys to the rows it names.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, time

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    Text,
    Time,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.core.models import Base, IdMixin, JSONType, TimestampMixin, text_enum, utcnow


class Trigger(enum.StrEnum):
    window_open = "window_open"  # when the visit's window opens
    before_close = "before_close"  # hours_before_close before it closes
    missed = "missed"  # when it closed without a session


class Channel(enum.StrEnum):
    email = "email"
    sms = "sms"
    push = "push"


class MessageKind(enum.StrEnum):
    reminder = "reminder"
    missed_visit = "missed_visit"
    escalation = "escalation"  # an SMS after an email left unanswered


class MessageStatus(enum.StrEnum):
    queued = "queued"  # waiting for its send_at (quiet hours) or a worker
    sending = "sending"  # a worker holds it
    retrying = "retrying"  # the provider failed for now; tried again after a backoff
    sent = "sent"  # the provider accepted it
    delivered = "delivered"  # the provider reported delivery
    failed = "failed"  # for good, with the provider's reason
    skipped = "skipped"  # its moment passed more than the rule's staleness limit ago
    cancelled = "cancelled"  # withdrawn, opted out, or the visit was done


FINAL = (
    MessageStatus.sent,
    MessageStatus.delivered,
    MessageStatus.failed,
    MessageStatus.skipped,
    MessageStatus.cancelled,
)


class ReminderRule(IdMixin, TimestampMixin, Base):
    """When a protocol visit's participants are reminded, by which channels, and when not."""

    __tablename__ = "reminder_rules"
    __table_args__ = (UniqueConstraint("visit_id", "trigger", "hours_before_close"),)

    study_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    visit_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("schedule_visits.id", ondelete="CASCADE")
    )
    trigger: Mapped[Trigger] = mapped_column(text_enum(Trigger, "reminder_trigger"))
    # before_close only: how long before the window closes (0 for the other triggers).
    hours_before_close: Mapped[int] = mapped_column(SmallInteger, default=0)
    # In order of preference: the message goes by the first one the participant can receive.
    channels: Mapped[list[str]] = mapped_column(JSONType, default=lambda: ["email"])
    # Local wall-clock hours in the participant's zone; start > end spans midnight.
    quiet_start: Mapped[time] = mapped_column(Time(), default=time(21, 0))
    quiet_end: Mapped[time] = mapped_column(Time(), default=time(8, 0))
    # A reminder whose moment is older than this when found is skipped, never sent late.
    stale_after_minutes: Mapped[int] = mapped_column(default=360)
    # An email left unanswered (visit still pending) this long is followed by an SMS.
    escalate_to_sms_after_hours: Mapped[int | None] = mapped_column(default=None)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class ReminderMessage(Base):
    """One message to one participant: what, by which channel, when, and what became of it."""

    __tablename__ = "reminder_messages"
    __table_args__ = (
        UniqueConstraint("occurrence_id", "rule_id", "channel"),
        Index("ix_reminder_messages_participant", "participant_id"),
        Index("ix_reminder_messages_study_created", "study_id", "created_at"),
        # A provider's delivery report names its own id (Twilio's status callback).
        Index(
            "ix_reminder_messages_provider_message_id",
            "provider",
            "provider_message_id",
            postgresql_where=text("provider_message_id IS NOT NULL"),
        ),
        # Emails still waiting for an answer, for the escalation scan.
        Index(
            "ix_reminder_messages_escalation",
            "escalate_at",
            postgresql_where=text("escalate_at IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, server_default=text("gen_random_uuid()"), default=uuid.uuid4
    )
    study_id: Mapped[uuid.UUID]
    site_id: Mapped[uuid.UUID]
    participant_id: Mapped[uuid.UUID]
    occurrence_id: Mapped[uuid.UUID]
    rule_id: Mapped[uuid.UUID]
    channel: Mapped[Channel] = mapped_column(text_enum(Channel, "reminder_channel"))
    kind: Mapped[MessageKind] = mapped_column(text_enum(MessageKind, "reminder_message_kind"))
    # The rule's moment, and when the message may go (later inside quiet hours).
    moment: Mapped[datetime]
    send_at: Mapped[datetime]
    # When an unanswered email escalates to SMS (None: no escalation, or done).
    escalate_at: Mapped[datetime | None] = mapped_column(default=None)
    status: Mapped[MessageStatus] = mapped_column(
        text_enum(MessageStatus, "reminder_message_status"), default=MessageStatus.queued
    )
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0)
    provider: Mapped[str | None] = mapped_column(String(32), default=None)
    provider_message_id: Mapped[str | None] = mapped_column(String(255), default=None)
    # The provider's reason for the last failure (never the address or the text sent).
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # The outbox row (job) sending it now.
    job_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class DispatchWatermark(Base):
    """How far the dispatch has looked: each tick handles the moments in (through, now].
    One row; a tick holds it FOR UPDATE, so two ticks of the same minute run one after the
    other and the second finds nothing new."""

    __tablename__ = "reminder_dispatch"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, default=1)
    through: Mapped[datetime]
