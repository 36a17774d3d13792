from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from server.core.models import Base, IdMixin, TimestampMixin


class User(IdMixin, TimestampMixin, Base):
    """Staff accounts (admins, auditors, coordinators, researchers, viewers). Participants are
    not users."""

    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(default=False)
    # Reads the audit trail (GET /api/audit), nothing else: no study, no administration.
    is_auditor: Mapped[bool] = mapped_column(default=False, server_default="false")
    is_active: Mapped[bool] = mapped_column(default=True)
