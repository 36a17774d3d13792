"""The audit trail's tables: the entries, and the chain's head they hang from."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from server.core.models import Base, JSONType


class AuditAction(enum.StrEnum):
    """What an entry records. Stored as plain text: a new action needs no migration."""

    login_succeeded = "login_succeeded"
    login_failed = "login_failed"
    user_created = "user_created"
    user_updated = "user_updated"
    membership_added = "membership_added"
    membership_role_changed = "membership_role_changed"
    membership_removed = "membership_removed"
    participant_enrolled = "participant_enrolled"
    participants_imported = "participants_imported"
    participant_updated = "participant_updated"
    participant_withdrawn = "participant_withdrawn"
    contact_read = "contact_read"
    contact_updated = "contact_updated"
    redcap_connection_created = "redcap_connection_created"
    redcap_connection_updated = "redcap_connection_updated"
    redcap_connection_deleted = "redcap_connection_deleted"
    redcap_mapping_saved = "redcap_mapping_saved"
    redcap_resync = "redcap_resync"
    redcap_participants_imported = "redcap_participants_imported"
    dead_letter_rerun = "dead_letter_rerun"
    submission_reprocessed = "submission_reprocessed"
    audit_exported = "audit_exported"
    schedule_protocol_published = "schedule_protocol_published"
    schedule_visit_overridden = "schedule_visit_overridden"
    schedule_anchor_changed = "schedule_anchor_changed"
    consent_document_created = "consent_document_created"
    consent_document_updated = "consent_document_updated"
    consent_document_published = "consent_document_published"
    consent_signed = "consent_signed"
    consent_withdrawn = "consent_withdrawn"
    consent_pdf_read = "consent_pdf_read"
    export_requested = "export_requested"
    export_downloaded = "export_downloaded"
    export_frozen = "export_frozen"
    redcap_push_requested = "redcap_push_requested"
    report_requested = "report_requested"
    report_downloaded = "report_downloaded"
    template_created = "template_created"
    template_updated = "template_updated"
    template_deleted = "template_deleted"
    task_closed = "task_closed"
    reminder_rule_created = "reminder_rule_created"
    reminder_rule_updated = "reminder_rule_updated"
    reminder_rule_deleted = "reminder_rule_deleted"
    reminder_message_resent = "reminder_message_resent"


class AuditEntry(Base):
    """One staff action or data access. Never updated or deleted (a trigger refuses both).

    No foreign keys: an entry outlives the user, study or participant it names, and a
    cascade could not delete it anyway. `hash` chains it to the entry before (server.audit.chain).
    """

    __tablename__ = "audit_entries"
    __table_args__ = (
        # GET /api/audit walks seq backwards, narrowed by one of these.
        Index("ix_audit_entries_study_seq", "study_id", "seq"),
        Index("ix_audit_entries_actor_seq", "actor_id", "seq"),
        Index("ix_audit_entries_object_seq", "object_id", "seq"),
        Index("ix_audit_entries_occurred_at", "occurred_at"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    occurred_at: Mapped[datetime]
    actor_id: Mapped[uuid.UUID | None]
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str | None] = mapped_column(String(64))
    study_id: Mapped[uuid.UUID | None]
    site_id: Mapped[uuid.UUID | None]
    request_id: Mapped[str | None] = mapped_column(String(128))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    summary: Mapped[dict[str, Any]] = mapped_column(JSONType)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


class AuditChainHead(Base):
    """The chain's last link: one row, updated by every entry's insert (its row lock is what
    keeps two writers from hanging entries on the same predecessor)."""

    __tablename__ = "audit_chain_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[bytes] = mapped_column(LargeBinary)
