"""kill -9 of the worker while a REDCap push's import is with REDCap: the push's job comes back
through the relay, a new worker finishes it from the set it chose, and REDCap holds each
session once, under its instance, with the new mapping's fields.

Real processes (tests.e2e): PostgreSQL database, redis-server, the REDCap stand-in (holding
the import until the worker is dead: no race with the clock), `python -m server relay` and a
prefork Celery worker killed with SIGKILL as a group.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.exports.models import RedcapPush
from server.outbox.models import JobStatus, OutboxEvent
from tests.e2e.stack import (
    Stack,
    all_synced,
    dead_letters,
    open_stack,
    record_imports,
    session_mapping,
    session_rows,
    set_up_study,
    submit,
)

pytestmark = pytest.mark.slow


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with open_stack(tmp_path) as stack:
        yield stack


async def _job(stack: Stack, job_id: str) -> OutboxEvent:
    async with stack.sessions() as db:
        job = await db.get(OutboxEvent, uuid.UUID(job_id))
        assert job is not None
        return job


async def test_a_worker_killed_mid_push_is_replaced_and_redcap_holds_each_session_once(
    stack: Stack,
) -> None:
    stack.start_relay()
    first = await stack.start_worker("first")
    async with stack.api() as http:
        world = await set_up_study(stack, http)
        ids = [await submit(http, world, n_trials=n) for n in (11, 12, 13)]
        await stack.wait_for(lambda: all_synced(stack, ids), timeout=60, what="the first syncs")
        synced_by = len(record_imports(stack.standin_state()))
        # The mapping changes: the device's model goes to the notes too.
        mapping = session_mapping(world.module_key)
        mapping["fields"].append({"source": "session.device", "field": "session_notes"})
        remapped = await http.put(
            f"/api/redcap/connections/{world.connection_id}/mapping",
            json=mapping,
            headers=world.staff,
        )
        assert remapped.status_code == 200, remapped.text
        stack.standin.control("configure", hold_imports=True)
        asked = await http.post(
            "/api/exports/redcap-pushes",
            params={"study_id": str(world.study_id)},
            json={},
            headers=world.staff,
        )
        assert asked.status_code == 202, asked.text
        push = asked.json()

    await stack.wait_for(
        lambda: stack.standin_state()["holding"] >= 1,
        timeout=30,
        every=0.02,
        what="the push's import to reach REDCap and be held",
    )
    first.kill()
    assert (await _job(stack, push["job_id"])).status == JobStatus.running
    # REDCap takes the orphaned call's rows; nobody hears back.
    stack.standin.control("configure", hold_imports=False)
    await stack.wait_for(
        lambda: len(record_imports(stack.standin_state())) == synced_by + 1,
        timeout=30,
        what="the stand-in to finish the orphaned import",
    )

    second = await stack.start_worker("second")

    async def pushed() -> bool:
        return (await _job(stack, push["job_id"])).status == JobStatus.succeeded

    await stack.wait_for(pushed, timeout=120, what="the push after the kill")
    rows = session_rows(stack.standin_state(), world.participant_code)
    assert [(int(r["redcap_repeat_instance"]), r["srt_n_trials"], r["session_notes"])
            for r in rows] == [(1, "11", "Pixel 8"), (2, "12", "Pixel 8"),
                               (3, "13", "Pixel 8")]  # fmt: skip
    # After the first syncs: the killed push's import, and its re-send (the same instances).
    imports = record_imports(stack.standin_state())
    assert [(c["status"], c["rows"]) for c in imports[synced_by:]] == [(200, 3), (200, 3)]
    job = await _job(stack, push["job_id"])
    assert (job.attempts, job.error) == (2, None)
    async with stack.sessions() as db:
        row = await db.get(RedcapPush, uuid.UUID(push["id"]))
        assert row is not None and row.total == 3 and row.finished_at is not None
    assert await all_synced(stack, ids)
    assert await dead_letters(stack) == []
    assert "task_succeeded" in second.output()
