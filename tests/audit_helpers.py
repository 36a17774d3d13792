"""Reading the audit trail back in tests: the entries a test's requests wrote."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit.models import AuditAction, AuditEntry


async def entries(
    db: AsyncSession, action: AuditAction, object_id: uuid.UUID | str | None = None
) -> list[AuditEntry]:
    query = select(AuditEntry).where(AuditEntry.action == action.value)
    if object_id is not None:
        query = query.where(AuditEntry.object_id == str(object_id))
    return list((await db.execute(query.order_by(AuditEntry.seq))).scalars())


async def only_entry(
    db: AsyncSession, action: AuditAction, object_id: uuid.UUID | str | None = None
) -> AuditEntry:
    found = await entries(db, action, object_id)
    assert len(found) == 1, [(e.action, e.object_id, e.summary) for e in found]
    return found[0]


def text_of(entry: AuditEntry) -> str:
    """Everything an entry holds, as one string to look for PHI in."""
    values: list[Any] = [getattr(entry, c.key) for c in AuditEntry.__table__.columns]
    return " ".join(str(v) for v in values)
