"""kill -9 of the worker while its REDCap import is in flight: a new worker finishes the sync,
and REDCap holds the submission once.

Real processes throughout (tests.e2e): PostgreSQL database, redis-server, the REDCap stand-in,
`python -m server relay` and a prefork Celery worker, killed with SIGKILL as a group (the
parent and its child at once, as the OOM killer or a lost VM would).

Recovery takes the worker's hard time limit plus OUTBOX_LEASE_SECONDS: a running task holds
its outbox row that long, since nothing tells a slow task from a dead one. With the production
time limit (360 s) and lease (300 s) that is 11 minutes; this test's workers run with a time
limit of TIME_LIMIT_S (tests.e2e.celery_worker) and the lease set low, so it takes seconds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kombu.connection import Connection
from redis import Redis

from server.jobs.models import JobStatus
from server.outbox import service as outbox
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

TIME_LIMIT_S = 8  # the tasks' hard time limit in this test's workers (production: 360 s)
LEASE_S = 2  # OUTBOX_LEASE_SECONDS: a running task holds its row TIME_LIMIT_S + LEASE_S
WORKER_SETTINGS: dict[str, object] = {
    "OUTBOX_LEASE_SECONDS": LEASE_S,
    # The REDCap claim of a dead worker is taken over after this.
    "REDCAP_SYNC_LEASE_SECONDS": 2,
    # Redis gives an unacknowledged message back after this; Settings accept no less than
    # 60 s, and it must outlast the time limit. Longer than the test: the first delivery comes
    # back only when the test forces it (below).
    "CELERY_VISIBILITY_TIMEOUT": 60,
    "TASK_RETRY_BACKOFF_MAX": 2,  # shorter than the visibility timeout, as Settings require
}
REDCAP_DELAY_S = 3.0  # how long the stand-in sits on the import before it carries it out


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with open_stack(tmp_path) as stack:
        yield stack


async def all_done_but_one(stack: Stack, redis: Redis, ids: list[uuid.UUID]) -> bool:
    events = await outbox_rows(stack, ids)
    if len(events) != 3 * len(ids) or any(e.completed_at is None for e in events):
        return False
    queued = redis.llen("redcap") or redis.llen("maintenance") or redis.llen("reports")
    return not queued and redis.hlen("unacked") == 1


def lines_about(log: str, event: str, event_id: uuid.UUID) -> list[str]:
    return [line for line in log.splitlines() if event in line and str(event_id) in line]


async def test_a_worker_killed_mid_import_leaves_one_instance_in_redcap(stack: Stack) -> None:
    stack.start_relay(OUTBOX_LEASE_SECONDS=LEASE_S)
    first = await stack.start_worker("first", time_limit_s=TIME_LIMIT_S, **WORKER_SETTINGS)
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
    killed_at = time.monotonic()
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

    second = await stack.start_worker("second", time_limit_s=TIME_LIMIT_S, **WORKER_SETTINGS)
    await stack.wait_for(
        lambda: all_synced(stack, [victim]), timeout=30, what="the sync after the kill"
    )
    # Sent again when the row's hold ran out (TIME_LIMIT_S + LEASE_S after the task started),
    # long before Redis would have given the message back (CELERY_VISIBILITY_TIMEOUT).
    assert time.monotonic() - killed_at < TIME_LIMIT_S + LEASE_S + 15
    # Everything done but the first delivery of the victim's task, which Redis still holds.
    await stack.wait_for(
        lambda: all_done_but_one(stack, redis, [earlier, victim]), timeout=20, what="all done"
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
    assert event.completed_at is not None and event.publish_attempts >= 2
    assert await dead_letters(stack) == []
    # The killed worker never finished the task; the new one did.
    assert not lines_about(first.output(), "task_succeeded", event.id)
    assert lines_about(second.output(), "task_succeeded", event.id)
    skipped = len(lines_about(second.output(), "task_skipped", event.id))

    # Redis still holds the first delivery, unacknowledged, and gives it back once
    # CELERY_VISIBILITY_TIMEOUT has passed. Not waiting for that here: restored now, the way
    # kombu restores it then. The worker finds the event completed and sends nothing.
    assert redis.hlen("unacked") == 1
    restore = {"visibility_timeout": 0}
    with Connection(stack.redis.url, transport_options=restore) as broker:  # type: ignore[no-untyped-call]
        broker.default_channel.qos.restore_visible(num=10)
    await stack.wait_for(
        lambda: (
            len(lines_about(second.output(), "task_skipped", event.id)) > skipped
            and not redis.hlen("unacked")
        ),
        timeout=15,
        what="the stale delivery to be skipped",
    )
    assert len(record_imports(stack.standin_state())) == 3
    assert len(session_rows(stack.standin_state(), world.participant_code)) == 2
