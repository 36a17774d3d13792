"""REDCap down while submissions arrive: they wait (sync states pending, jobs retrying, nothing
lost); REDCap back: every one synced, as instances 1..N in the order received, none twice.

Real processes throughout (tests.e2e): PostgreSQL database, redis-server, the REDCap stand-in
(killed with SIGKILL, started again on the same port with its stored records), `python -m
server relay` and a prefork Celery worker, whose retries are capped at 1 s here.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from server.outbox import service as outbox
from server.outbox.models import JobStatus
from server.redcap.models import SyncStatus
from server.submissions.models import Submission
from tests.e2e.stack import (
    Stack,
    all_synced,
    dead_letters,
    open_stack,
    outbox_rows,
    record_imports,
    session_rows,
    set_up_study,
    submit,
    sync_jobs,
    sync_states,
)

pytestmark = pytest.mark.slow

N = 4
UNREACHABLE = "REDCap could not be reached"


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with open_stack(tmp_path) as stack:
        yield stack


async def piled_up(stack: Stack, ids: list[uuid.UUID]) -> bool:
    """Every sync waits for REDCap, every job shows it, and the message that carries them has
    been tried more than once (the first of its events each time: the rest wait behind it)."""
    states = await sync_states(stack, ids)
    jobs = await sync_jobs(stack, ids)
    return (
        len(states) == len(ids)
        and all(
            s.status == SyncStatus.pending and UNREACHABLE in (s.error or "")
            for s in states.values()
        )
        and len(jobs) == len(ids)
        and all(j.status in (JobStatus.retrying, JobStatus.running) for j in jobs.values())
        and max(j.attempts for j in jobs.values()) >= 2
    )


async def test_submissions_wait_for_redcap_and_go_in_order_once(stack: Stack) -> None:
    stack.start_relay()
    await stack.start_worker("only", TASK_RETRY_BACKOFF_MAX=1, TASK_MAX_RETRIES=100)
    async with stack.api() as http:
        world = await set_up_study(stack, http)  # the mapping is checked against REDCap
        stack.standin.kill()
        ids = [await submit(http, world, n_trials=10 + k) for k in range(N)]

    await stack.wait_for(
        lambda: piled_up(stack, ids), timeout=30, what="every sync pending and retrying"
    )
    # Nothing lost, nothing given up on.
    jobs = await sync_jobs(stack, ids)
    errors = [j.error for j in jobs.values()]
    assert all(UNREACHABLE in (e or "") for e in errors), errors
    syncs = [e for e in await outbox_rows(stack, ids) if e.topic == outbox.REDCAP_SYNC_SUBMISSION]
    assert len(syncs) == N and all(e.finished_at is None for e in syncs)
    assert await dead_letters(stack) == []

    stack.standin.start()  # same port, same stored records
    await stack.wait_for(lambda: all_synced(stack, ids), timeout=30, what="all synced")

    state = stack.standin_state()
    rows = session_rows(state, world.participant_code)
    # One instance per submission, numbered in the order the API received them.
    assert [(int(r["redcap_repeat_instance"]), r["srt_n_trials"]) for r in rows] == [
        (k + 1, str(10 + k)) for k in range(N)
    ]
    async with stack.sessions() as db:
        received = list(
            await db.scalars(
                select(Submission.id).where(Submission.id.in_(ids)).order_by(Submission.received_at)
            )
        )
    assert received == ids
    states = await sync_states(stack, ids)
    assert [states[i].instance for i in ids] == list(range(1, N + 1))
    # None twice: since it came back, REDCap took each row once, and refused nothing.
    imports = record_imports(state)
    assert all(c["status"] == 200 for c in imports)
    assert sum(c["rows"] for c in imports) == N

    # The other jobs wake from their retry countdown and find their submission synced.
    async def jobs_done() -> bool:
        jobs = await sync_jobs(stack, ids)
        return {j.status for j in jobs.values()} == {JobStatus.succeeded}

    await stack.wait_for(jobs_done, timeout=15, what="every job succeeded")
    assert len(record_imports(stack.standin_state())) == len(imports)
    assert await dead_letters(stack) == []
