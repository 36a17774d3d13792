"""Writing an acknowledged submission: the row (accepted or quarantined), its tasks and its
outbox rows, all or none.

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
from server.participant_auth.service import INACTIVE_STATUSES, LIVE_LOGIN_SQL, login_ended
from server.submissions.models import SubmissionStatus


@dataclass(frozen=True)
class NewSubmission:
    id: uuid.UUID
    client_submission_id: str
    participant_id: uuid.UUID
    # None when the study comes with the login check (insert_once_if_live).
    study_id: uuid.UUID | None
    session_id: uuid.UUID
    checksum: str
    raw_payload: bytes
    received_at: datetime
    status: SubmissionStatus
    # What keeps it quarantined (validation.Problem), None when accepted.
    problems: list[dict[str, Any]] | None
    # (module_id, module_key, module_version, summary, trials), in submission order; none
    # when quarantined (its tasks are in raw_payload only)
    tasks: list[tuple[uuid.UUID, str, int, dict[str, Any], list[dict[str, Any]]]]
    events: list[outbox.Event]


# Positional ($n) for asyncpg, which this path talks to directly. `l` is the row the
# submission takes its study from: given ($4) when the caller is checked already, or the
# live login's participant ($4 the login) when the check rides on the insert: no row, then
# nothing is written. Outbox ids come from gen_random_uuid(): nothing in the request needs them.
_STUDY_GIVEN = "SELECT $4::uuid AS study_id"
_STUDY_OF_LIVE_LOGIN = LIVE_LOGIN_SQL.format(
    login_id="$4", participant_id="$3", now="$8", inactive="$20"
)
_INSERT = """
    WITH l AS ({study}), s AS (
        INSERT INTO submissions (id, client_submission_id, participant_id, study_id,
                                 session_id, checksum, raw_payload, received_at, status,
                                 problems)
        SELECT $1, $2, $3, l.study_id, $5, $6, $7, $8, $18, $19::jsonb FROM l
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
        INSERT INTO outbox_events (id, topic, payload, created_at, due_at, subject_id, study_id)
        SELECT gen_random_uuid(), y.topic, y.payload::jsonb, $8, $8, s.id, l.study_id
        FROM s, l, unnest($16::text[], $17::text[]) AS y(topic, payload)
    )
    SELECT (SELECT id FROM s), EXISTS (SELECT FROM l)
"""
_INSERT_GIVEN = _INSERT.format(study=_STUDY_GIVEN)
_INSERT_IF_LIVE = _INSERT.format(study=_STUDY_OF_LIVE_LOGIN)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _arguments(new: NewSubmission, fourth: uuid.UUID) -> list[Any]:
    tasks = new.tasks
    return [
        new.id,
        new.client_submission_id,
        new.participant_id,
        fourth,
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
        new.status.value,
        None if new.problems is None else _json(new.problems),
    ]


async def insert_once(db: AsyncSession, new: NewSubmission) -> bool:
    """Insert unless this participant already used the idempotency key; True if inserted."""
    if new.study_id is None:
        raise ValueError("insert_once needs the study; insert_once_if_live finds it")
    args = _arguments(new, new.study_id)
    # Arguments first: the connection is held for the round trip only.
    async with statement_connection(db) as connection:
        inserted, _ = await connection.fetchrow(_INSERT_GIVEN, *args)
    return inserted is not None


async def insert_once_if_live(db: AsyncSession, new: NewSubmission, login_id: uuid.UUID) -> bool:
    """insert_once for the study of the participant whose login this is, if it is live
    (participant_auth.service.LIVE_LOGIN_SQL); the login check and the write in one round
    trip. Raises the login's 401 when it has ended, having written nothing."""
    args = _arguments(new, login_id)
    args.append(INACTIVE_STATUSES)
    async with statement_connection(db) as connection:
        inserted, live = await connection.fetchrow(_INSERT_IF_LIVE, *args)
    if not live:
        raise login_ended()
    return inserted is not None
