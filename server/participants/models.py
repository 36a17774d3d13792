from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.core.models import Base, IdMixin, TimestampMixin, text_enum, utcnow


class ParticipantStatus(enum.StrEnum):
    enrolled = "enrolled"
    active = "active"
    withdrawn = "withdrawn"
    completed = "completed"


class Participant(IdMixin, TimestampMixin, Base):
    """A pseudonymous participant: the code is all staff lists ever show."""

    __tablename__ = "participants"
    __table_args__ = (
        UniqueConstraint("study_id", "participant_code"),
        # Cursor pagination walks (study, id); site filters narrow it.
        Index("ix_participants_study_site_id", "study_id", "site_id", "id"),
    )

    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    site_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"))
    participant_code: Mapped[str] = mapped_column(String(64))
    status: Mapped[ParticipantStatus] = mapped_column(
        text_enum(ParticipantStatus, "participant_status"),
        default=ParticipantStatus.enrolled,
    )
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # BCP 47 ("en", "de"): which consent document is theirs (server.consent); None: unknown.
    language: Mapped[str | None] = mapped_column(String(16), default=None)
    enrolled_at: Mapped[datetime] = mapped_column(default=utcnow)


class ParticipantContact(Base):
    """PHI, kept apart and encrypted at rest (server.participants.contacts, with the key and
    rotation of REDCap tokens): a database dump alone reveals no address or number. Never in
    list views, never logged; read by coordinators and by the task sending a message."""

    __tablename__ = "participant_contacts"

    participant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("participants.id", ondelete="CASCADE"), primary_key=True
    )
    email_enc: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    # E.164, normalised with phonenumbers before it is encrypted.
    phone_enc: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    # A Web Push subscription (JSON: endpoint and keys), as the participant's browser gave it.
    push_enc: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    # Opt-outs per channel: no message goes by a channel the participant turned off.
    email_opt_out: Mapped[bool] = mapped_column(Boolean, default=False)
    sms_opt_out: Mapped[bool] = mapped_column(Boolean, default=False)
    push_opt_out: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
