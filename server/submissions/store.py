"""Writing an acknowledged submission: the row, its tasks and its outbox rows, all or none.

One statement (data-modifying CTEs): one round trip, atomic on its own (the ingest route runs
it in autocommit), where three INSERTs cost three round trips.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.db import statement_connection
from server.outbox import service as outbox


@dataclass(frozen=True)
class NewSubmission:
    id: uuid.UUID
    client_submission_id: str
    participant_id: uuid.UUID
    study_id: uuid.UUID
    session_id: uuid.UUID
    checksum: str
    raw_payload: bytes
    received_at: datetime
    # (module_id, module_key, module_version, summary, trials), in submission order
    tasks: list[tuple[uuid.UUID, str, int, dict[str, Any], list[dict[str, Any]]]]
    events: list[outbox.Event]


# Positional ($n) for asyncpg, which this path talks to directly (see insert_once).
# Outbox ids come from gen_random_uuid(): nothing in the request needs them.
_INSERT = """
    WITH s AS (
        INSERT INTO submissions (id, client_submission_id, participant_id, study_id,
                                 session_id, checksum, raw_payload, received_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (participant_id, client_submission_id) DO NOTHING
        RETURNING id
    ), t AS (
        INSERT INTO submission_tasks (submission_id, position, module_id, module_key,
                                      module_version, summary, trials, n_trials)
        SELECT s.id, x.position, x.module_id, x.module_key, x.module_version,
               x.summary::jsonb, x.trials::json, x.n_trials
        FROM s, unnest($9::int[], $10::uuid[], $11::text[], $12::int[], $13::text[],
                       $14::text[], $15::int[])
             AS x(position, module_id, module_key, module_version, summary, trials, n_trials)
    ), o AS (
        INSERT INTO outbox_events (id, topic, payload, created_at, publish_attempts, subject_id)
        SELECT gen_random_uuid(), y.topic, y.payload::jsonb, $8, 0, s.id
        FROM s, unnest($16::text[], $17::text[]) AS y(topic, payload)
    )
    SELECT id FROM s
"""


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def insert_once(db: AsyncSession, new: NewSubmission) -> bool:
    """Insert unless this participant already used the idempotency key; True if inserted."""
    tasks = new.tasks
    args = (
        new.id,
        new.client_submission_id,
        new.participant_id,
        new.study_id,
        new.session_id,
        new.checksum,
        new.raw_payload,
        new.received_at,
        list(range(len(tasks))),
        [t[0] for t in tasks],
        [t[1] for t in tasks],
        [t[2] for t in tasks],
        [_json(t[3]) for t in tasks],
        [_json(t[4]) for t in tasks],
        [len(t[4]) for t in tasks],
        [e.topic for e in new.events],
        [_json(e.payload) for e in new.events],
    )
    # Arguments first: the connection is held for the round trip only.
    async with statement_connection(db) as connection:
        inserted = await connection.fetchval(_INSERT, *args)
    return inserted is not None
