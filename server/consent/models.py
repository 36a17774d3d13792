"""Consent: a study's documents (versioned, immutable once published), each signature, each
withdrawal. Signatures and withdrawals are history: rows are added, never changed."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from server.core.catalogue import PublicationStatus
from server.core.models import Base, IdMixin, TimestampMixin, text_enum, utcnow


class AttestationKind(enum.StrEnum):
    typed_name = "typed_name"  # the participant types their name
    checkbox = "checkbox"  # "I agree", for studies whose ethics approval allows it


class DataUse(enum.StrEnum):
    """What a withdrawn participant's data may still be used for (exports honour it)."""

    all_data = "all_data"
    until_withdrawal = "until_withdrawal"
    none = "none"


class ConsentDocument(IdMixin, TimestampMixin, Base):
    """One version of a study's consent text. A track is (study, site or none, language or
    none); publishing gives the next version number of its track, and from then on the row
    never changes. Drafts have no version yet."""

    __tablename__ = "consent_documents"
    __table_args__ = (
        Index(
            "uq_consent_documents_track_version",
            "study_id",
            "site_id",
            "language",
            "version",
            unique=True,
            postgresql_nulls_not_distinct=True,
            postgresql_where=text("version IS NOT NULL"),
        ),
    )

    study_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    site_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("sites.id", ondelete="RESTRICT"), default=None
    )
    language: Mapped[str | None] = mapped_column(String(16), default=None)
    version: Mapped[int | None] = mapped_column(default=None)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    requires_reconsent: Mapped[bool] = mapped_column(default=True)
    status: Mapped[PublicationStatus] = mapped_column(
        text_enum(PublicationStatus, "publication_status"), default=PublicationStatus.draft
    )
    published_at: Mapped[datetime | None] = mapped_column(default=None)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )


class ConsentRecord(IdMixin, Base):
    """One signature. Signing the same version again adds a row: nothing is overwritten."""

    __tablename__ = "consent_records"
    __table_args__ = (
        Index("ix_consent_records_participant_signed", "participant_id", "signed_at"),
    )

    participant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("participants.id", ondelete="CASCADE")
    )
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    document_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("consent_documents.id"))
    document_version: Mapped[int]
    signed_at: Mapped[datetime] = mapped_column(default=utcnow)
    attestation_kind: Mapped[AttestationKind] = mapped_column(
        text_enum(AttestationKind, "attestation_kind")
    )
    # The typed name (PHI): shown in the PDF only, never in lists, logs or the audit trail.
    attestation: Mapped[str] = mapped_column(String(200))
    ip_address: Mapped[str | None] = mapped_column(String(64), default=None)
    app_version: Mapped[str] = mapped_column(String(64), default="")


class ConsentWithdrawal(IdMixin, Base):
    """A participant's withdrawal, by themselves (withdrawn_by None) or a staff member."""

    __tablename__ = "consent_withdrawals"
    __table_args__ = (
        Index("ix_consent_withdrawals_participant_at", "participant_id", "withdrawn_at"),
    )

    participant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("participants.id", ondelete="CASCADE")
    )
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    withdrawn_at: Mapped[datetime] = mapped_column(default=utcnow)
    withdrawn_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    reason: Mapped[str] = mapped_column(Text)
    data_use: Mapped[DataUse] = mapped_column(text_enum(DataUse, "consent_data_use"))
    previous_status: Mapped[str] = mapped_column(String(32))
