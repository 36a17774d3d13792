from __future__ import annotations

import enum
import uuid

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.core.models import Base, IdMixin, TimestampMixin, text_enum


class StudyStatus(enum.StrEnum):
    active = "active"
    archived = "archived"


class StudyRole(enum.StrEnum):
    coordinator = "coordinator"
    researcher = "researcher"
    viewer = "viewer"


class Study(IdMixin, TimestampMixin, Base):
    __tablename__ = "studies"

    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[StudyStatus] = mapped_column(
        text_enum(StudyStatus, "study_status"), default=StudyStatus.active
    )


class Site(IdMixin, TimestampMixin, Base):
    __tablename__ = "sites"
    __table_args__ = (UniqueConstraint("study_id", "code"),)

    study_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")


class StudyMembership(IdMixin, TimestampMixin, Base):
    __tablename__ = "study_memberships"
    __table_args__ = (UniqueConstraint("study_id", "user_id"),)

    study_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[StudyRole] = mapped_column(text_enum(StudyRole, "study_role"))


class StudyMembershipSite(Base):
    """Limits a membership to some of its study's sites; a membership with no rows here
    covers the whole study (server.studies.access.SiteScope)."""

    __tablename__ = "study_membership_sites"

    membership_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("study_memberships.id", ondelete="CASCADE"), primary_key=True
    )
    # RESTRICT, not CASCADE: deleting a member's last site would otherwise leave no rows,
    # which reads as the whole study, and quietly widen what they see.
    site_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("sites.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
