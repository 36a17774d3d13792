"""Redis killed while submissions arrive, then started again empty on the same port: every
acknowledged submission reaches REDCap, once, with no manual step.

Real processes throughout (tests.e2e.stack): PostgreSQL database, redis-server, the REDCap
stand-in, `python -m server relay` and a prefork Celery worker. The relay and the worker run
through the whole outage: both must find the new server by themselves (it has no queues, no
bindings and none of the old connections).

Redis dying while a task runs: the worker acknowledged the message when the run started, so
the run goes on and writes its outcome; a message lost with the old server comes back through
the relay once its row's lease is over (a lost message is what the lease is for). A pool
child that is stopped anyway (a warm shutdown's SIGTERM, which billiard turns into sys.exit
wherever the child's event loop is) still exits, even inside a driver's callback
(EXIT_GRACE_S): the last test.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.outbox.models import JobStatus
from tests.e2e.stack import (
    ROOT,
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
from workers.runtime import EXIT_GRACE_S

pytestmark = pytest.mark.slow


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with open_stack(tmp_path) as stack:
        yield stack


async def test_submissions_acknowledged_while_redis_was_down_reach_redcap(stack: Stack) -> None:
    relay = stack.start_relay()
    worker = await stack.start_worker("only")
    relay_pid, worker_pid = relay.pid, worker.pid
    async with stack.api() as http:
        world = await set_up_study(stack, http)
        before = await submit(http, world, n_trials=10)
        await stack.wait_for(lambda: all_synced(stack, [before]), timeout=20, what="a first sync")
        # Nothing in flight (see the in-flight test below): only what is sent from now on.
        await stack.wait_for(lambda: all_done(stack, [before]), timeout=20, what="quiet")
        first_server = stack.redis_client().info("server")["run_id"]

        stack.redis.kill()
        # Acknowledged (201, in submit) with no broker: the rows wait in the outbox.
        during = [await submit(http, world, n_trials=n) for n in (11, 12, 13)]

    def publish_failures() -> int:
        return relay.output().count("relay_publish_failed")

    # Down long enough that both have tried and failed more than once.
    await stack.wait_for(lambda: publish_failures() >= 3, timeout=15, what="the relay to fail")
    await stack.wait_for(
        lambda: "Cannot connect to redis" in worker.output() and "(2/100)" in worker.output(),
        timeout=15,
        what="the worker to fail to reconnect twice",
    )
    events = await outbox_rows(stack, during)
    assert len(events) == 9  # archive, REDCap sync and scoring, for each
    # Each waits as its own job, queued and never published.
    assert all(e.published_at is None and e.status == JobStatus.queued for e in events)

    stack.redis.start()  # a new, empty server on the same port
    assert stack.redis_client().info("server")["run_id"] != first_server
    await stack.wait_for(
        lambda: all_synced(stack, during), timeout=40, what="the three to reach REDCap"
    )

    # Nothing was restarted by hand: the same relay and worker processes did it.
    assert relay.alive and worker.alive
    assert (relay.pid, worker.pid) == (relay_pid, worker_pid)
    assert "relay_recovered" in relay.output()
    assert "Connection to broker lost" in worker.output()
    assert worker.output().count("Connected to redis") == 2

    state = stack.standin_state()
    rows = session_rows(state, world.participant_code)
    assert [(int(r["redcap_repeat_instance"]), r["srt_n_trials"]) for r in rows] == [
        (1, "10"),
        (2, "11"),
        (3, "12"),
        (4, "13"),
    ]
    # Each submission imported once: no row went to REDCap twice.
    imports = record_imports(state)
    assert all(c["status"] == 200 for c in imports)
    assert sum(c["rows"] for c in imports) == 4
    states = await sync_states(stack, during)
    assert sorted(s.instance or 0 for s in states.values()) == [2, 3, 4]

    await stack.wait_for(
        lambda: all_done(stack, [before, *during]), timeout=15, what="every job done"
    )
    jobs = await sync_jobs(stack, during)
    assert {j.status for j in jobs.values()} == {JobStatus.succeeded}
    assert await dead_letters(stack) == []


# The worker acknowledged the message when the run started, so the run goes on without the
# broker and finishes; the worker reconnects to the new server. Followed by another
# submission or not, every one reaches REDCap once.
@pytest.mark.parametrize("then", ["nothing", "another_submission"])
async def test_a_sync_in_flight_when_redis_dies_still_completes(stack: Stack, then: str) -> None:
    # A short lease: the message the worker had reserved (a submission's archive or scoring)
    # is lost with the old server and comes back when its lease is over, within the test.
    relay = stack.start_relay(OUTBOX_LEASE_SECONDS=15)
    worker = await stack.start_worker("only", OUTBOX_LEASE_SECONDS=15)
    async with stack.api() as http:
        world = await set_up_study(stack, http)
        stack.standin.control("configure", hold_imports=True)
        in_flight = await submit(http, world, n_trials=10)
        await stack.wait_for(
            lambda: stack.standin_state()["holding"] >= 1,
            timeout=20,
            every=0.02,
            what="the import call to reach REDCap and be held",
        )
        stack.redis.kill()  # while the worker's child waits for REDCap's answer
        await stack.wait_for(
            lambda: "Cannot connect to redis" in worker.output(),
            timeout=15,
            what="the worker to lose the broker",
        )
        stack.redis.start()
        stack.standin.control("configure", hold_imports=False)
        ids = [in_flight]
        if then == "another_submission":
            ids.append(await submit(http, world, n_trials=11))

    try:
        await stack.wait_for(lambda: all_synced(stack, ids), timeout=15, what="all synced")
        await stack.wait_for(lambda: all_done(stack, ids), timeout=45, what="all done")
    finally:
        # Whatever happened to the task, REDCap had the row once.
        rows = session_rows(stack.standin_state(), world.participant_code)
        assert len({int(r["redcap_repeat_instance"]) for r in rows}) == len(rows)
    assert relay.alive and worker.alive


async def test_a_worker_holding_an_unacknowledged_message_survives_redis_coming_back_empty(
    stack: Stack,
) -> None:
    # The worker runs one sync (REDCap slow) and holds the next message, reserved and not yet
    # acknowledged, when Redis dies and comes back empty: it reconnects and goes on, it does
    # not exit (it once did, after "Restoring 1 unacknowledged message(s)").
    # A short lease: a message lost with the old server comes back within the test.
    relay = stack.start_relay(OUTBOX_LEASE_SECONDS=15)
    worker = await stack.start_worker("only", OUTBOX_LEASE_SECONDS=15)
    async with stack.api() as http:
        world = await set_up_study(stack, http)
        first = await submit(http, world, n_trials=10)
        await stack.wait_for(lambda: all_synced(stack, [first]), timeout=20, what="a first sync")
        stack.standin.control("configure", hold_imports=True)
        ids = [await submit(http, world, n_trials=n) for n in (11, 12, 13)]
        await stack.wait_for(
            lambda: stack.standin_state()["holding"] >= 1,
            timeout=20,
            every=0.02,
            what="an import call to reach REDCap and be held",
        )
        redis = stack.redis_client()
        await stack.wait_for(
            lambda: redis.hlen("unacked") >= 1, timeout=10, what="a message held unacknowledged"
        )
        stack.redis.kill()
        await stack.wait_for(
            lambda: "Cannot connect to redis" in worker.output(),
            timeout=15,
            what="the worker to lose the broker",
        )
        stack.redis.start()
        stack.standin.control("configure", hold_imports=False)
    await stack.wait_for(lambda: all_synced(stack, ids), timeout=60, what="all synced")
    await stack.wait_for(
        lambda: worker.output().count("Connected to redis") >= 2,
        timeout=30,
        what="the worker to reconnect",
    )
    assert worker.alive and relay.alive, worker.tail()
    assert "Unrecoverable error" not in worker.output()
    rows = session_rows(stack.standin_state(), world.participant_code)
    assert [(int(r["redcap_repeat_instance"]), r["srt_n_trials"]) for r in rows] == [
        (1, "10"), (2, "11"), (3, "12"), (4, "13"),
    ]  # fmt: skip


# A pool child whose SIGTERM lands inside a database driver's callback, as billiard delivers it.
INTERRUPTED_CHILD = """
import asyncio, sys, time
from workers import runtime

loop = asyncio.new_event_loop()
runtime._runtime = runtime.Runtime(None, loop, None, None)

async def query():
    reply, settled = loop.create_future(), loop.create_future()

    def data_received():
        sys.exit(-15)  # billiard's SIGTERM handler, running inside the driver's callback
        reply.set_result("row")  # what the callback was about to do

    loop.call_soon(data_received)
    try:
        return await reply
    except asyncio.CancelledError:
        await settled  # the driver's clean-up waits on a protocol that never settles
        raise

started = time.monotonic()
try:
    runtime.run(query)
except SystemExit as exc:
    print(f"exit {exc.code} after {time.monotonic() - started:.1f} s")
"""


def test_a_pool_child_stopped_inside_a_driver_callback_still_exits() -> None:
    child = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_CHILD],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=EXIT_GRACE_S + 20,  # it used to wait for the coroutine for ever
    )
    # It exited (the subprocess's timeout is the only clock here), after waiting for the
    # coroutine to unwind for its grace, not cutting it off at once.
    assert child.stdout.startswith("exit -15 after "), child.stdout + child.stderr
    assert float(child.stdout.split()[-2]) >= EXIT_GRACE_S - 0.5
