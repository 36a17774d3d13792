from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.core.models import Base, IdMixin, JSONType, utcnow


class Export(IdMixin, Base):
    """One export request and, once built, its zip in the archive's storage.

    The job's life (queued, running, retrying, failed) is its outbox row's (job_id); this row
    keeps what only an export has: the request, progress, the published zip, the freeze.
    """

    __tablename__ = "exports"

    study_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    requested_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    # The effective filters (a site-scoped member's sites filled in) and the formats asked for.
    filters: Mapped[dict[str, Any]] = mapped_column(JSONType)
    formats: Mapped[list[str]] = mapped_column(JSONType)
    job_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    # A re-run of a freeze: reads exactly the submissions that export listed.
    source_export_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("exports.id", ondelete="SET NULL"), default=None
    )
    # Scores computed after this are not read: a freeze's re-run reads the scores it read.
    data_as_of: Mapped[datetime | None] = mapped_column(default=None)
    # Submissions the filters chose but consent left out, by reason (the manifest's "excluded").
    excluded: Mapped[dict[str, int]] = mapped_column(JSONType, default=dict)
    rows_done: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_total: Mapped[int | None] = mapped_column(BigInteger, default=None)
    progress_at: Mapped[datetime | None] = mapped_column(default=None)
    # Set only once the zip is complete in storage: a key here is always a whole file.
    storage_key: Mapped[str | None] = mapped_column(String(1024), default=None)
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    frozen_at: Mapped[datetime | None] = mapped_column(default=None)
    frozen_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )


class ExportSubmission(Base):
    """The submissions an export read, chosen once when its build starts: every file of the
    export reads this set, and a freeze's re-run reads it again."""

    __tablename__ = "export_submissions"

    export_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("exports.id", ondelete="CASCADE"), primary_key=True
    )
    # No foreign key: a frozen list outlives a deleted submission, and the re-run says so.
    submission_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    checksum: Mapped[str] = mapped_column(String(64))


class ExportQualityFlag(Base):
    """The data-quality flags an export read, a row a session and rule, recorded when its
    build starts: quality checks are recomputed whole when a session is rescored (they are
    derived, server.scoring), so a freeze's re-run reads these, not the checks of the day."""

    __tablename__ = "export_quality_flags"

    export_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("exports.id", ondelete="CASCADE"), primary_key=True
    )
    # No foreign key: a frozen record outlives a deleted session, as export_submissions does.
    session_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    rule: Mapped[str] = mapped_column(String(64), primary_key=True)
    fired: Mapped[bool]


class RedcapPush(IdMixin, Base):
    """A filtered set of sessions pushed through the study's REDCap mapping as one job (after
    a mapping change, say). The job (job_id, topic exports.redcap_push) chooses the set once
    (redcap_push_submissions), puts their sync states back to pending and drives the
    connections' senders (server.redcap.sync) until every one is settled; the per-record
    results are those sync states."""

    __tablename__ = "redcap_pushes"

    study_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    requested_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    # The effective filters (a site-scoped member's sites filled in), as for an export.
    filters: Mapped[dict[str, Any]] = mapped_column(JSONType)
    job_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    # Submissions the filters chose but consent left out, by reason (never who).
    excluded: Mapped[dict[str, int]] = mapped_column(JSONType, default=dict)
    # Set with the chosen set, in its transaction: a redelivered job never chooses (or resets
    # the states) again.
    chosen_at: Mapped[datetime | None] = mapped_column(default=None)
    total: Mapped[int | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class RedcapPushSubmission(Base):
    """The submissions a push sends, chosen once by its job, and what became of each: the
    sync's state as the push finished (status ... synced_at, as server.redcap's), kept so a
    later sync or push of the same submission does not rewrite this push's results."""

    __tablename__ = "redcap_push_submissions"

    push_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("redcap_pushes.id", ondelete="CASCADE"), primary_key=True
    )
    submission_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str | None] = mapped_column(String(16), default=None)
    record_id: Mapped[str | None] = mapped_column(String(100), default=None)
    event: Mapped[str | None] = mapped_column(String(100), default=None)
    instrument: Mapped[str | None] = mapped_column(String(100), default=None)
    instance: Mapped[int | None] = mapped_column(default=None)
    # Chosen rows are written in SQL (server.exports.redcap_push): a default in the table.
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text, default=None)
    error_field: Mapped[str | None] = mapped_column(String(100), default=None)
    last_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    synced_at: Mapped[datetime | None] = mapped_column(default=None)
