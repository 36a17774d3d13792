"""Two real `celery -A workers.app beat` processes on a Redis of the test's own: one schedules.

Beat keeps its schedule in Redis behind a lock (redbeat; workers.app.build_config). A second
beat blocks on the lock and sends nothing while the first lives; once the first is killed
with SIGKILL (no clean-up: its lock is left to expire, BEAT_LOCK_TIMEOUT_SECONDS), the second
takes the lock and sends. The test adds an every-second entry to the schedule in Redis, as
redbeat allows at run time, so sends come every second rather than every minute. Every
message names the process that sent it (`origin`: gen<pid>@host), so the queue itself says
who sent what, and in which order.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from celery.schedules import schedule
from redbeat.schedulers import RedBeatSchedulerEntry, get_redis
from redis import Redis

from tests import services
from tests.conftest import TEST_SECRET, make_settings
from tests.e2e.stack import Process
from tests.services import eventually
from workers.app import build_config, create_celery
from workers.beat import BEAT_SCHEDULE

LOCK_TIMEOUT_S = 5  # the successor's wait after a kill: short, for the test
EVERY_SECOND = "test.every_second"
HEARTBEAT = "workers.tasks.maintenance.heartbeat"  # routed to the maintenance queue
# Far more than a lock timeout and a few sends take.
WAIT_S = 60.0


def beat(name: str, redis_url: str, tmp: Path) -> Process:
    """The Procfile's beat, on this Redis, logging at DEBUG (where redbeat says it waits)."""
    env = os.environ | {
        "ENVIRONMENT": "test",
        # Beat never connects to the database; the settings want one named.
        "DATABASE_URL": services.TEST_DATABASE_URL,
        "REDIS_URL": redis_url,
        "JWT_SECRET_KEY": TEST_SECRET,
        "BEAT_LOCK_TIMEOUT_SECONDS": str(LOCK_TIMEOUT_S),
        "LOG_LEVEL": "DEBUG",
        "LOG_JSON": "false",
    }
    argv = [sys.executable, "-m", "celery", "-A", "workers.app", "beat", "--loglevel=DEBUG"]
    return Process(f"beat-{name}", argv, env, tmp / f"beat-{name}.log").start()


def senders(client: Redis) -> list[int]:
    """The pid of the process that sent each message on the maintenance queue, oldest first."""
    pids = []
    for raw in reversed(client.lrange("maintenance", 0, -1)):  # kombu pushes at the head
        origin: str = json.loads(raw)["headers"]["origin"]
        pids.append(int(origin.partition("@")[0].removeprefix("gen")))
    return pids


def scheduled_tasks(app: Celery) -> dict[str, str]:
    """{entry name: task} of every entry in the schedule in Redis."""
    keys = get_redis(app).zrange(app.redbeat_conf.schedule_key, 0, -1)  # type: ignore[attr-defined]
    entries = [RedBeatSchedulerEntry.from_key(key, app=app) for key in keys]
    return {entry.name: entry.task for entry in entries}


def logs(*beats: Process) -> Callable[[], str]:
    return lambda: "\n".join(f"--- {b.name}\n{b.tail()}" for b in beats)


@pytest.mark.parametrize("lock_timeout", [5, 30, 31, 600])
def test_beat_renews_its_lock_at_least_five_times_per_timeout(lock_timeout: int) -> None:
    # The loop is the renewal: a beat whose next task is a minute away still wakes up (and
    # renews) every beat_max_loop_interval, or a waiting beat would take the lock from a live one.
    settings = make_settings(services.TEST_DATABASE_URL, BEAT_LOCK_TIMEOUT_SECONDS=lock_timeout)
    config = build_config(settings)
    assert config["beat_scheduler"] == "redbeat.RedBeatScheduler"
    assert config["redbeat_lock_timeout"] == lock_timeout
    assert 0 < config["beat_max_loop_interval"] * 5 <= lock_timeout


@pytest.mark.slow
async def test_a_second_beat_waits_on_the_lock_and_sends_only_once_the_first_is_killed(
    tmp_path: Path,
) -> None:
    with services.own_redis() as (_server, port):
        url = f"redis://127.0.0.1:{port}/0"
        settings = make_settings(
            services.TEST_DATABASE_URL, REDIS_URL=url, BEAT_LOCK_TIMEOUT_SECONDS=LOCK_TIMEOUT_S
        )
        app = create_celery(settings)
        client = Redis.from_url(url)
        started: list[Process] = []
        try:
            every_second = schedule(timedelta(seconds=1))
            RedBeatSchedulerEntry(EVERY_SECOND, HEARTBEAT, every_second, app=app).save()

            first = beat("first", url, tmp_path)
            started.append(first)
            await eventually(lambda: first.pid in senders(client), WAIT_S, logs(first))
            assert "beat: Acquired lock" in first.output()
            # The beat loaded the deployment's schedule into Redis, next to the test's entry.
            expected = {name: entry["task"] for name, entry in BEAT_SCHEDULE.items()}
            assert scheduled_tasks(app) == expected | {EVERY_SECOND: HEARTBEAT}

            second = beat("second", url, tmp_path)
            started.append(second)
            await eventually(
                lambda: "beat: Acquiring lock" in second.output(), WAIT_S, logs(first, second)
            )
            # The first sends on while the second waits: three more sends, each a second
            # apart, through several of the second's tries at the lock (one a second).
            before = senders(client).count(first.pid)
            await eventually(
                lambda: senders(client).count(first.pid) >= before + 3,
                WAIT_S,
                logs(first, second),
            )
            assert second.alive, second.tail()
            assert second.pid not in senders(client)
            assert "Sending due task" not in second.output()
            assert "beat: Acquired lock" not in second.output()

            first.kill()  # SIGKILL: the lock stays in Redis until it expires
            by_first = senders(client)
            await eventually(
                lambda: senders(client).count(second.pid) >= 2, WAIT_S, logs(first, second)
            )
            assert "beat: Acquired lock" in second.output()
            assert "Sending due task test.every_second" in second.output()
            # Never both: every message of the first came before every message of the second.
            sent = senders(client)
            assert set(by_first) == {first.pid}
            assert sent[: len(by_first)] == by_first
            assert set(sent[len(by_first) :]) == {second.pid}
        finally:
            for process in started:
                process.kill()
            client.close()
            get_redis(app).close()
