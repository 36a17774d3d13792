from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from server.core.models import Base, IdMixin, utcnow


class UserSession(IdMixin, Base):
    """A server-side login: access tokens name it (`sid`), so revoking it ends them at once."""

    __tablename__ = "user_sessions"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    refresh_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The token this one replaced: seen again, it was stolen or replayed, and the session ends.
    previous_refresh_token_hash: Mapped[str | None] = mapped_column(
        String(64), default=None, index=True
    )
    user_agent: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)

    def is_active(self, now: datetime) -> bool:
        return self.revoked_at is None and self.expires_at > now
