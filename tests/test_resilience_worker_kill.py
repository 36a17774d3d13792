"""kill -9 of the worker while its REDCap import is in flight: a new worker finishes the sync
within seconds, and REDCap holds the submission once.

Real processes throughout (tests.e2e): PostgreSQL database, redis-server, the REDCap stand-in,
`python -m server relay` and a prefork Celery worker, killed with SIGKILL as a group (the
parent and its child at once, as the OOM killer or a lost VM would), all with production's
OUTBOX_LEASE_SECONDS (five minutes). The killed run's advisory lock went with its database
connection (server.outbox.liveness): the relay sees its row running with nobody holding it and
publishes it again at its next liveness check, not a lease later. The stand-in holds the import
(its hold knob) until the worker is dead: no race with the clock.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.outbox import service as outbox
from server.outbox.models import JobStatus
from server.redcap.models import SyncStatus
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

# Far more than a liveness check and a sync take, far less than a lease: a pass shows the run
# came back without waiting for one.
RECOVERY_TIMEOUT_S = 120.0


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with open_stack(tmp_path) as stack:
        yield stack


def lines_about(log: str, event: str, event_id: uuid.UUID) -> list[str]:
    return [line for line in log.splitlines() if event in line and str(event_id) in line]


async def hold_an_import(stack: Stack) -> None:
    """Wait until an import call is with the stand-in, held there (hold_imports on)."""
    await stack.wait_for(
        lambda: stack.standin_state()["holding"] >= 1,
        timeout=30,
        every=0.02,
        what="the import call to reach REDCap and be held",
    )


async def test_a_worker_killed_mid_import_is_replaced_within_seconds_one_instance_in_redcap(
    stack: Stack,
) -> None:
    assert stack.settings.OUTBOX_LEASE_SECONDS >= 300  # production's lease, not shortened
    stack.start_relay()
    first = await stack.start_worker("first")
    async with stack.api() as http:
        world = await set_up_study(stack, http)
        earlier = await submit(http, world, n_trials=11)
        await stack.wait_for(
            lambda: all_synced(stack, [earlier]), timeout=30, what="the first sync"
        )
        stack.standin.control("configure", hold_imports=True)
        victim = await submit(http, world, n_trials=12)
    await hold_an_import(stack)
    first.kill()
    killed_at = time.monotonic()
    assert len(record_imports(stack.standin_state())) == 1, "answered before the kill"
    # The stand-in carries the orphaned call out: REDCap took the row, nobody heard back.
    stack.standin.control("configure", hold_imports=False)
    await stack.wait_for(
        lambda: len(record_imports(stack.standin_state())) == 2,
        timeout=30,
        what="the stand-in to finish the orphaned import",
    )
    claimed = (await sync_states(stack, [victim]))[victim]
    assert (claimed.status, claimed.instance, claimed.error) == (SyncStatus.pending, 2, None)

    second = await stack.start_worker("second")

    async def in_redcap_once_in_order() -> bool:
        rows = session_rows(stack.standin_state(), world.participant_code)
        got = [(int(r["redcap_repeat_instance"]), r["srt_n_trials"]) for r in rows]
        return got == [(1, "11"), (2, "12")] and await all_synced(stack, [earlier, victim])

    async def sync_jobs_succeeded() -> bool:
        jobs = await sync_jobs(stack, [earlier, victim])
        return all(j.status == JobStatus.succeeded for j in jobs.values())

    await stack.wait_for(
        in_redcap_once_in_order, timeout=RECOVERY_TIMEOUT_S, what="the sync after the kill"
    )
    await stack.wait_for(
        sync_jobs_succeeded, timeout=RECOVERY_TIMEOUT_S, what="the sync jobs to succeed"
    )
    print(f"\nbacklog complete {time.monotonic() - killed_at:.1f} s after the kill")

    # Instance 2 was sent twice, an update the second time; nothing failed on the way.
    imports = record_imports(stack.standin_state())
    assert [(c["status"], c["rows"]) for c in imports] == [(200, 1)] * 3
    states = await sync_states(stack, [earlier, victim])
    assert (states[victim].instance, states[victim].attempts) == (2, 2)
    jobs = await sync_jobs(stack, [earlier, victim])
    assert (jobs[victim].attempts, jobs[victim].error) == (2, None)
    assert await dead_letters(stack) == []
    # The killed worker never finished the task; the new one did, from the relay's message.
    [event] = [e for e in await outbox_rows(stack, [victim])
               if e.topic == outbox.REDCAP_SYNC_SUBMISSION]  # fmt: skip
    assert not lines_about(first.output(), "task_succeeded", event.id)
    assert lines_about(second.output(), "task_succeeded", event.id)
    held = [str(v) for v in stack.redis_client().hvals("unacked")]
    assert not [m for m in held if "workers.tasks.redcap.sync_submission" in m]


async def test_after_a_kill_mid_import_the_next_submission_moves_the_backlog_at_once(
    stack: Stack,
) -> None:
    stack.start_relay()
    first = await stack.start_worker("first")
    async with stack.api() as http:
        world = await set_up_study(stack, http)
        earlier = await submit(http, world, n_trials=10)  # the project's shape checked with it
        await stack.wait_for(lambda: all_synced(stack, [earlier]), timeout=30, what="synced")
        stack.standin.control("configure", hold_imports=True)
        victim = await submit(http, world, n_trials=11)
        await hold_an_import(stack)
        first.kill()
        assert len(record_imports(stack.standin_state())) == 1, "answered before the kill"
        stack.standin.control("configure", hold_imports=False)
        await stack.start_worker("second")
        # The dead sender's lock went with its database connection: the next task of the
        # connection sends the victim again (same instance) and its own, in order.
        later = await submit(http, world, n_trials=12)
    await stack.wait_for(
        lambda: all_synced(stack, [victim, later]), timeout=RECOVERY_TIMEOUT_S, what="synced"
    )
    rows = session_rows(stack.standin_state(), world.participant_code)
    assert [(int(r["redcap_repeat_instance"]), r["srt_n_trials"]) for r in rows] == [
        (1, "10"),
        (2, "11"),
        (3, "12"),
    ]

    # The victim's job reads succeeded (its submission reached REDCap), nothing failed.
    async def both_succeeded() -> bool:
        jobs = await sync_jobs(stack, [victim, later])
        return all(j.status == JobStatus.succeeded for j in jobs.values())

    await stack.wait_for(both_succeeded, timeout=RECOVERY_TIMEOUT_S, what="both jobs succeeded")
    assert await dead_letters(stack) == []
