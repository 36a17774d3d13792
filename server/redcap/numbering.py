"""The highest repeat instance each record holds in a connection's states: what the next
batch numbers from (server.redcap.batch) and what a preview shows (server.redcap.preview)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Record by record (LATERAL), each the top of one range of ix_redcap_sync_states_numbering:
# the highest instance is the last entry of (connection, instrument, record, event); ordered
# by event too, or PostgreSQL does not see that `event IS NULL` keeps the index's order, and
# reads and sorts every state of the record. As one query with `record_id IN (...)`
# PostgreSQL read every state of the connection, and with a max() per event every state of
# each record: the cost grew with the study's history.
_PG_MAX_INSTANCE = """
    SELECT r.record_id, m.top
    FROM unnest(CAST(:record_ids AS varchar[])) AS r(record_id)
    CROSS JOIN LATERAL (
        SELECT s.instance AS top
        FROM redcap_sync_states AS s
        WHERE s.connection_id = :connection_id AND s.instrument = :instrument
          AND s.record_id = r.record_id AND {event} AND s.instance IS NOT NULL
          AND s.submission_id <> ALL(CAST(:leaving_out AS uuid[]))
        ORDER BY s.event DESC, s.instance DESC
        LIMIT 1
    ) AS m
"""
_PG_MAX_INSTANCES = {
    False: text(_PG_MAX_INSTANCE.format(event="s.event IS NULL")),
    True: text(_PG_MAX_INSTANCE.format(event="s.event = CAST(:event AS varchar)")),
}


async def max_instances(
    session: AsyncSession,
    connection_id: uuid.UUID,
    instrument: str,
    record_ids: set[str],
    *,
    event: str | None = None,
    leaving_out: Sequence[uuid.UUID] = (),
) -> dict[tuple[str, str], int]:
    """(record id, event or "") -> the highest instance this connection's states hold in that
    event (but the states of `leaving_out`, whose stored instance is about to be replaced)."""
    # Raw SQL kept on purpose: Core's max() over `record_id IN (...)` grew with the study's
    # history (bench-sync, migration 0007); the LATERAL form reads one index entry a record.
    params: dict[str, Any] = {
        "record_ids": sorted(record_ids),
        "connection_id": connection_id,
        "instrument": instrument,
        "leaving_out": list(leaving_out),
    }
    if event:
        params["event"] = event
    rows = await session.execute(_PG_MAX_INSTANCES[bool(event)], params)
    return {(str(r), event or ""): int(n or 0) for r, n in rows}
