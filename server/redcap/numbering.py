"""The highest repeat instance each record holds in a connection's states: what the next
batch numbers from (server.redcap.batch) and what a preview shows (server.redcap.preview);
and the batch's states claimed under their instances."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
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


# A batch's states claimed in one statement, whatever its size: one row per array element,
# the batch's common values as single parameters. It was an executemany of 500 rows through
# the ORM's bulk insert, 25 ms of the pick's 65 and most of its Python time, while the
# previous batch is with REDCap in a thread of the same process.
_CLAIM = text(
    """
    INSERT INTO redcap_sync_states AS s (
        submission_id, record_id, instance, study_id, connection_id, event, instrument,
        status, attempts, error, error_field, last_attempt_at, created_at
    )
    SELECT u.submission_id, u.record_id, u.instance, :study_id, :connection_id,
           CAST(:event AS varchar), CAST(:instrument AS varchar), 'pending', 1, NULL, NULL,
           :now, :now
    FROM unnest(
        CAST(:submission_ids AS uuid[]), CAST(:record_ids AS varchar[]),
        CAST(:instances AS integer[])
    ) AS u(submission_id, record_id, instance)
    ON CONFLICT (submission_id) DO UPDATE SET
        connection_id = excluded.connection_id, record_id = excluded.record_id,
        event = excluded.event, instrument = excluded.instrument,
        instance = excluded.instance, status = excluded.status,
        last_attempt_at = excluded.last_attempt_at, error = NULL, error_field = NULL,
        attempts = s.attempts + 1
    """
)


async def claim(
    session: AsyncSession,
    *,
    study_id: uuid.UUID,
    connection_id: uuid.UUID,
    event: str | None,
    instrument: str | None,
    now: datetime,
    rows: Sequence[tuple[uuid.UUID, str, int | None]],
) -> None:
    """These states pending through this connection, each under its (submission, record id,
    instance), created or with one more attempt."""
    await session.execute(
        _CLAIM,
        {
            "study_id": study_id,
            "connection_id": connection_id,
            "event": event,
            "instrument": instrument,
            "now": now,
            "submission_ids": [r[0] for r in rows],
            "record_ids": [r[1] for r in rows],
            "instances": [r[2] for r in rows],
        },
    )
