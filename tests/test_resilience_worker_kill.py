"""kill -9 of the worker while its REDCap import is in flight: a new worker finishes the sync,
and REDCap holds the submission once.

Real processes throughout (tests.e2e): PostgreSQL database, redis-server, the REDCap stand-in,
`python -m server relay` and a prefork Celery worker, killed with SIGKILL as a group (the
parent and its child at once, as the OOM killer or a lost VM would).

Recovery takes one OUTBOX_LEASE_SECONDS (also the tasks' hard time limit): the run held its
row that long, since nothing tells a slow run from a dead one; then the relay publishes it
again. This test's lease is a few seconds; production's is five minutes.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.outbox import service as outbox
from server.outbox.models import JobStatus
from server.redcap.models import SyncStatus
from tests.e2e.stack import (
    Stack,
    all_done,
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

LEASE_S = 8  # OUTBOX_LEASE_SECONDS, the run's hold on its row and its hard time limit
WORKER_SETTINGS: dict[str, object] = {
    "OUTBOX_LEASE_SECONDS": LEASE_S,
    "TASK_RETRY_BACKOFF_MAX": 2,
}
REDCAP_DELAY_S = 3.0  # how long the stand-in sits on the import before it carries it out


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with open_stack(tmp_path) as stack:
        yield stack


async def all_done_but_a_reservation(stack: Stack, ids: list[uuid.UUID]) -> bool:
    """Every row finished and nothing queued; at most the dead worker's one reserved message
    left unacknowledged."""
    events = await outbox_rows(stack, ids)
    if not events or any(e.finished_at is None for e in events):
        return False
    redis = stack.redis_client()
    queued = redis.llen("redcap") or redis.llen("maintenance") or redis.llen("reports")
    return not queued and redis.hlen("unacked") <= 1


def lines_about(log: str, event: str, event_id: uuid.UUID) -> list[str]:
    return [line for line in log.splitlines() if event in line and str(event_id) in line]


async def test_a_worker_killed_mid_import_leaves_one_instance_in_redcap(stack: Stack) -> None:
    stack.start_relay(OUTBOX_LEASE_SECONDS=LEASE_S)
    first = await stack.start_worker("first", **WORKER_SETTINGS)
    redis = stack.redis_client()
    async with stack.api() as http:
        world = await set_up_study(stack, http)
        earlier = await submit(http, world, n_trials=11)
        await stack.wait_for(
            lambda: all_synced(stack, [earlier]), timeout=20, what="the first sync"
        )
        await stack.wait_for(lambda: all_done(stack, [earlier]), timeout=20, what="quiet")

        # REDCap slow from here: the next import stays in flight for seconds.
        stack.standin.control("configure", delay_seconds=REDCAP_DELAY_S)
        hits = stack.standin_state()["hits"]
        victim = await submit(http, world, n_trials=12)

    await stack.wait_for(
        lambda: stack.standin_state()["hits"] > hits,
        timeout=20,
        every=0.02,
        what="the import call to reach REDCap",
    )
    first.kill()
    state = stack.standin_state()
    assert len(record_imports(state)) == 1, "the victim's import was answered before the kill"
    stack.standin.control("configure", delay_seconds=0)

    # The stand-in carries the orphaned call out: REDCap took the row, nobody heard back.
    await stack.wait_for(
        lambda: len(record_imports(stack.standin_state())) == 2,
        timeout=10,
        what="the stand-in to finish the orphaned import",
    )
    orphaned = stack.standin_state()
    assert [
        int(r["redcap_repeat_instance"]) for r in session_rows(orphaned, world.participant_code)
    ] == [1, 2]
    job = (await sync_jobs(stack, [victim]))[victim]
    assert (job.status, job.attempts) == (JobStatus.running, 1)
    claimed = (await sync_states(stack, [victim]))[victim]
    assert (claimed.status, claimed.instance, claimed.error) == (SyncStatus.pending, 2, None)

    second = await stack.start_worker("second", **WORKER_SETTINGS)
    # Published again once the run's lease is over (LEASE_S after it started), and run.
    await stack.wait_for(
        lambda: all_synced(stack, [victim]), timeout=LEASE_S + 30, what="the sync after the kill"
    )
    # The killed worker had reserved the next message (the victim's archive or scoring): its
    # row comes back the same way, once its lease is over. The message itself stays in Redis's
    # unacked set until the visibility timeout hands it out again, to a task that finds its row
    # finished and does nothing.
    await stack.wait_for(
        lambda: all_done_but_a_reservation(stack, [earlier, victim]),
        timeout=LEASE_S + 30,
        what="all done",
    )

    final = stack.standin_state()
    rows = session_rows(final, world.participant_code)
    # Exactly one row per submission: instance 2 was sent twice, an update the second time.
    assert [(int(r["redcap_repeat_instance"]), r["srt_n_trials"]) for r in rows] == [
        (1, "11"),
        (2, "12"),
    ]
    imports = record_imports(final)
    assert [(c["status"], c["rows"]) for c in imports] == [(200, 1)] * 3
    states = await sync_states(stack, [earlier, victim])
    assert (states[victim].instance, states[victim].attempts) == (2, 2)
    jobs = await sync_jobs(stack, [earlier, victim])
    assert (jobs[victim].status, jobs[victim].attempts) == (JobStatus.succeeded, 2)
    assert jobs[victim].error is None
    [event] = [e for e in await outbox_rows(stack, [victim])
               if e.topic == outbox.REDCAP_SYNC_SUBMISSION]  # fmt: skip
    assert event.finished_at is not None
    assert await dead_letters(stack) == []
    # The killed worker never finished the task; the new one did. The sync's message was
    # acknowledged when the first run started, and only the relay sent it again: what Redis
    # still holds unacknowledged is at most the dead worker's reservation of another topic.
    assert not lines_about(first.output(), "task_succeeded", event.id)
    assert lines_about(second.output(), "task_succeeded", event.id)
    held = [str(v) for v in redis.hvals("unacked")]
    assert len(held) <= 1
    assert not [m for m in held if "workers.tasks.redcap.sync_submission" in m]


async def test_after_a_kill_mid_import_the_next_submission_moves_the_backlog_at_once(
    stack: Stack,
) -> None:
    # A lease far longer than this test waits: nothing here comes back through the relay.
    settings = {**WORKER_SETTINGS, "OUTBOX_LEASE_SECONDS": 600}
    stack.start_relay(OUTBOX_LEASE_SECONDS=600)
    first = await stack.start_worker("first", **settings)
    async with stack.api() as http:
        world = await set_up_study(stack, http)
        earlier = await submit(http, world, n_trials=10)  # the project's shape checked with it
        await stack.wait_for(lambda: all_synced(stack, [earlier]), timeout=20, what="synced")
        stack.standin.control("configure", delay_seconds=REDCAP_DELAY_S)
        hits = stack.standin_state()["hits"]
        victim = await submit(http, world, n_trials=11)
        await stack.wait_for(
            lambda: stack.standin_state()["hits"] > hits,
            timeout=20,
            every=0.02,
            what="the import call to reach REDCap",
        )
        first.kill()
        assert len(record_imports(stack.standin_state())) == 1, "answered before the kill"
        stack.standin.control("configure", delay_seconds=0)
        await stack.start_worker("second", **settings)
        # The dead sender's lock went with its database connection: the next task of the
        # connection sends the victim again (same instance) and its own, in order.
        later = await submit(http, world, n_trials=12)
    await stack.wait_for(
        lambda: all_synced(stack, [victim, later]), timeout=30, what="both synced, no lease"
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

    await stack.wait_for(both_succeeded, timeout=30, what="both jobs succeeded")
    assert await dead_letters(stack) == []
