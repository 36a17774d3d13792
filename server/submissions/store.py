"""Writing an acknowledged submission: the row, its tasks and its outbox rows, all or none.

On PostgreSQL this is one statement (data-modifying CTEs): one round trip, atomic on its own
(the ingest route runs it in autocommit), where three INSERTs cost three round trips.
Other databases (the embedded SQLite default) take the portable path.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.db import driver_connection
from server.outbox import service as outbox
from server.submissions.models import Submission, SubmissionTask


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
_PG_INSERT = """
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
        SELECT y.id, y.topic, y.payload::jsonb, $8, 0, s.id
        FROM s, unnest($16::uuid[], $17::text[], $18::text[]) AS y(id, topic, payload)
    )
    SELECT id FROM s
"""


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _insert_postgresql(db: AsyncSession, new: NewSubmission) -> bool:
    apg = await driver_connection(db)
    inserted = await apg.fetchval(
        _PG_INSERT,
        new.id,
        new.client_submission_id,
        new.participant_id,
        new.study_id,
        new.session_id,
        new.checksum,
        new.raw_payload,
        new.received_at,
        list(range(len(new.tasks))),
        [t[0] for t in new.tasks],
        [t[1] for t in new.tasks],
        [t[2] for t in new.tasks],
        [_json(t[3]) for t in new.tasks],
        [_json(t[4]) for t in new.tasks],
        [len(t[4]) for t in new.tasks],
        [uuid.uuid4() for _ in new.events],
        [e.topic for e in new.events],
        [_json(e.payload) for e in new.events],
    )
    return inserted is not None


async def _insert_portable(db: AsyncSession, new: NewSubmission) -> bool:
    inserted = await db.execute(
        sqlite_insert(Submission)
        .values(
            id=new.id,
            client_submission_id=new.client_submission_id,
            participant_id=new.participant_id,
            study_id=new.study_id,
            session_id=new.session_id,
            checksum=new.checksum,
            raw_payload=new.raw_payload,
            received_at=new.received_at,
        )
        .on_conflict_do_nothing(index_elements=["participant_id", "client_submission_id"])
        .returning(Submission.id)
    )
    if inserted.scalar_one_or_none() is None:
        return False
    await db.execute(
        insert(SubmissionTask),
        [
            {
                "submission_id": new.id,
                "position": position,
                "module_id": module_id,
                "module_key": key,
                "module_version": version,
                "summary": summary,
                "trials": trials,
                "n_trials": len(trials),
            }
            for position, (module_id, key, version, summary, trials) in enumerate(new.tasks)
        ],
    )
    await outbox.add(db, new.events, created_at=new.received_at)
    return True


async def insert_once(db: AsyncSession, new: NewSubmission) -> bool:
    """Insert unless this participant already used the idempotency key; True if inserted."""
    if db.get_bind().dialect.name == "postgresql":
        return await _insert_postgresql(db, new)
    return await _insert_portable(db, new)
