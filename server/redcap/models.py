from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.core.models import Base, IdMixin, JSONType, TimestampMixin, text_enum, utcnow


class RedcapConnection(IdMixin, TimestampMixin, Base):
    """A study's (or one site's) REDCap project. The token is stored encrypted, never shown."""

    __tablename__ = "redcap_connections"
    # NULL site_id is the study-wide connection; PostgreSQL treats NULLs as distinct, so the
    # service also checks there is only one study-wide connection.
    __table_args__ = (UniqueConstraint("study_id", "site_id"),)

    study_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    site_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), default=None
    )
    api_url: Mapped[str] = mapped_column(String(500))
    token_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    token_last4: Mapped[str] = mapped_column(String(4))
    # What REDCap said at the last successful test.
    project_title: Mapped[str | None] = mapped_column(String(500), default=None)
    redcap_version: Mapped[str | None] = mapped_column(String(32), default=None)
    is_longitudinal: Mapped[bool | None] = mapped_column(default=None)
    has_repeating: Mapped[bool | None] = mapped_column(default=None)
    last_tested_at: Mapped[datetime | None] = mapped_column(default=None)
    # REDCap bans an IP past its page-hit threshold (600/min by default): stay well under.
    max_calls_per_minute: Mapped[int] = mapped_column(default=120)
    batch_size: Mapped[int] = mapped_column(default=500)
    enabled: Mapped[bool] = mapped_column(default=True)


class RedcapMapping(TimestampMixin, Base):
    """How a session's results become REDCap fields, validated against the project metadata.

    document: {"record_id_field", "record_id_source", "event", "repeating_instrument",
               "instance_rule", "fields": [{"source", "field"}]}
    """

    __tablename__ = "redcap_mappings"

    connection_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("redcap_connections.id", ondelete="CASCADE"), primary_key=True
    )
    document: Mapped[dict[str, Any]] = mapped_column(JSONType)
    validated_at: Mapped[datetime] = mapped_column(default=utcnow)


class SyncStatus(enum.StrEnum):
    pending = "pending"
    synced = "synced"
    failed = "failed"
    skipped = "skipped"  # no connection or mapping for this submission's study/site


class RedcapSyncState(Base):
    """One submission's state in REDCap: where it went, or REDCap's own words why not."""

    __tablename__ = "redcap_sync_states"
    __table_args__ = (
        Index("ix_redcap_sync_states_connection_status", "connection_id", "status"),
        # The batch's question, once a batch: the highest instance each record holds (batch.
        # max_instances, one range of this index a record). It was a scan of every state of
        # the connection: 50 ms a batch at 10,000 states, with the connection's sender waiting.
        Index(
            "ix_redcap_sync_states_numbering",
            "connection_id",
            "instrument",
            "record_id",
            "event",
            "instance",
        ),
    )

    submission_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), primary_key=True
    )
    connection_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("redcap_connections.id", ondelete="SET NULL"), default=None
    )
    study_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[SyncStatus] = mapped_column(
        text_enum(SyncStatus, "redcap_sync_status"), default=SyncStatus.pending
    )
    record_id: Mapped[str | None] = mapped_column(String(100), default=None)
    event: Mapped[str | None] = mapped_column(String(100), default=None)
    instrument: Mapped[str | None] = mapped_column(String(100), default=None)
    # Fixed the first time the record is built, so a resend updates the same instance.
    instance: Mapped[int | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    error_field: Mapped[str | None] = mapped_column(String(100), default=None)
    last_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    synced_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RedcapParticipantImport(IdMixin, Base):
    """One enrolment from REDCap asked for: its settings, and once run, its report.

    The work itself is an outbox row (topic redcap.import_participants, subject_id this id):
    its status, attempts and error are the job's, read from there, not kept twice.
    """

    __tablename__ = "redcap_participant_imports"

    connection_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("redcap_connections.id", ondelete="CASCADE"), index=True
    )
    requested_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    # ParticipantImportIn as asked (form, code field, site source): no participant data.
    settings: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # ParticipantImportReport, written with the participants it created, in one transaction.
    report: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    # Where the settings do not fit the REDCap project (form or field unknown): the details.
    problem: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
