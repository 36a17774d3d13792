"""Writing the audit trail, reading it back, and verifying its chain.

record() only adds to the caller's transaction: the entry commits with the change it records,
or not at all. Callers record what changed (field names, counts, ids), never the values of
contact details or credentials.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit import chain
from server.audit.models import AuditAction, AuditChainHead, AuditEntry
from server.core.db import driver_connection
from server.core.models import utcnow
from server.core.request_context import get_actor_id, get_client_ip, get_request_id

# One statement, one round trip: the head's row lock orders concurrent writers (a second
# writer waits for the first one's commit, then re-reads the head it left), and the link is
# computed from the head under that lock, so two entries never share a predecessor.
_INSERT = """
WITH head AS (
    UPDATE audit_chain_head
    SET seq = seq + 1, hash = sha256(hash || int8send(seq + 1) || $1::bytea)
    WHERE id = 1
    RETURNING seq, hash
)
INSERT INTO audit_entries (
    seq, hash, occurred_at, actor_id, action, object_type, object_id,
    study_id, site_id, request_id, client_ip, summary
)
SELECT head.seq, head.hash, $2::timestamptz, $3::uuid, $4::text, $5::text, $6::text,
    $7::uuid, $8::uuid, $9::text, $10::text, $11::text::jsonb
FROM head
RETURNING seq
"""


def _plain(value: Any) -> Any:
    """The summary, refused if it holds a float: jsonb may give one back as another number
    (1e20 as an integer), and the entry's hash would no longer match it."""
    if isinstance(value, float):
        raise TypeError("audit summaries hold no floats: use an integer or a string")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


async def record(
    db: AsyncSession,
    *,
    action: AuditAction,
    object_type: str,
    object_id: uuid.UUID | str | None = None,
    study_id: uuid.UUID | None = None,
    site_id: uuid.UUID | None = None,
    summary: Mapping[str, Any] | None = None,
    actor_id: uuid.UUID | None = None,
) -> int:
    """Append one entry in the caller's transaction; its seq. The actor (unless given: a
    login names its user before anyone is signed in), request id and client address come from
    the request being served; None in a worker or the CLI.

    Call it last, once the change is made: the chain's head stays locked from here until the
    transaction ends, and every other audited transaction waits for it."""
    entry: dict[str, Any] = {
        "occurred_at": utcnow(),
        "actor_id": actor_id or get_actor_id(),
        "action": action.value,
        "object_type": object_type,
        "object_id": None if object_id is None else str(object_id),
        "study_id": study_id,
        "site_id": site_id,
        "request_id": get_request_id(),
        "client_ip": get_client_ip(),
        # Canonical here already: the hash covers what jsonb will give back.
        "summary": orjson.loads(orjson.dumps(_plain(dict(summary or {})))),
    }
    # The driver directly: through SQLAlchemy the statement costs several times the CPU, and
    # this one rides on every audited request (tests/bench/audit.py).
    connection = await driver_connection(db)
    if not connection.is_in_transaction():
        # SQLAlchemy's asyncpg adapter sends BEGIN with the session's first statement of its
        # own: an entry written before that would commit on its own, whatever the change does.
        await db.execute(text("SELECT 1"))
        if not connection.is_in_transaction():
            raise RuntimeError("audit entries are written in a transaction, not in autocommit")
    seq = await connection.fetchval(
        _INSERT,
        chain.payload(entry),
        *(entry[name] for name in chain.PAYLOAD_FIELDS[:-1]),
        orjson.dumps(entry["summary"]).decode(),
    )
    return int(seq)


async def verify(db: AsyncSession, *, batch: int = 5000) -> chain.Verdict:
    """Walk the whole chain in one snapshot (the caller's REPEATABLE READ transaction keeps
    the head and the entries consistent while writers go on)."""
    head = await db.get_one(AuditChainHead, 1)
    walk = chain.ChainWalk()
    after = 0
    while True:
        rows = (
            await db.execute(
                select(AuditEntry.__table__)
                .where(AuditEntry.seq > after, AuditEntry.seq <= head.seq)
                .order_by(AuditEntry.seq)
                .limit(batch)
            )
        ).mappings()
        fed = 0
        for row in rows:
            fed += 1
            after = row["seq"]
            if not walk.feed(row):
                return walk.finish(head.seq, head.hash)
        if fed < batch:
            return walk.finish(head.seq, head.hash)


@dataclass(frozen=True)
class AuditFilter:
    study_id: uuid.UUID | None = None
    site_id: uuid.UUID | None = None
    actor_id: uuid.UUID | None = None
    action: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _query(where: AuditFilter) -> Any:
    query = select(AuditEntry)
    for column, value in (
        (AuditEntry.study_id, where.study_id),
        (AuditEntry.site_id, where.site_id),
        (AuditEntry.actor_id, where.actor_id),
        (AuditEntry.action, where.action),
        (AuditEntry.object_type, where.object_type),
        (AuditEntry.object_id, where.object_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.since is not None:
        query = query.where(AuditEntry.occurred_at >= where.since)
    if where.until is not None:
        query = query.where(AuditEntry.occurred_at < where.until)
    return query


async def list_page(
    db: AsyncSession, *, where: AuditFilter, before_seq: int | None, limit: int
) -> tuple[list[AuditEntry], int | None]:
    """Newest first; the cursor is the last seq shown (entries are never inserted behind it)."""
    query = _query(where)
    if before_seq is not None:
        query = query.where(AuditEntry.seq < before_seq)
    query = query.order_by(AuditEntry.seq.desc()).limit(limit + 1)
    rows = list((await db.execute(query)).scalars())
    next_cursor = rows[limit - 1].seq if len(rows) > limit else None
    return rows[:limit], next_cursor


async def stream(db: AsyncSession, *, where: AuditFilter, batch: int = 2000) -> Any:
    """Every matching entry, oldest first, a batch at a time (the CSV export)."""
    after = 0
    while True:
        query = _query(where).where(AuditEntry.seq > after).order_by(AuditEntry.seq).limit(batch)
        rows = list((await db.execute(query)).scalars())
        for row in rows:
            yield row
        if len(rows) < batch:
            return
        after = rows[-1].seq
