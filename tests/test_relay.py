"""The outbox relay against real Redis: one message per due row, again once its lease has
passed, and riding out a Redis that dies and comes back as a new, empty server."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.cli import migrate
from server.core.config import Settings
from server.core.db import create_engine, create_sessionmaker
from server.core.models import utcnow
from server.outbox import service as outbox
from server.outbox.models import JobStatus, OutboxEvent
from server.outbox.topics import ROUTES
from tests import services
from tests.conftest import create_database, drop_database, make_settings
from tests.services import eventually
from tests.test_jobs import add_event, create_submission
from workers import relay
from workers.publisher import CeleryPublisher

LEASE = timedelta(minutes=5)
ROOT = Path(__file__).resolve().parent.parent


def queued(redis: Redis, queue: str) -> list[tuple[str, list[Any]]]:
    """(task name, args) of each message waiting in a Celery queue on Redis, oldest first."""
    messages = []
    for raw in reversed(redis.lrange(queue, 0, -1)):
        message = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        messages.append((message["headers"]["task"], args))
    return messages


def queued_ids(redis: Redis, queue: str) -> list[str]:
    """The row ids in a Celery queue, message after message (one id a message)."""
    return [event_id for _task, [event_id] in queued(redis, queue)]


@pytest.fixture
def publisher(settings: Settings, redis_client: Redis) -> Iterator[CeleryPublisher]:
    publisher = CeleryPublisher.from_settings(settings)
    yield publisher
    publisher.close()


async def test_relay_publishes_due_rows_once_and_again_after_the_lease(
    db: AsyncSession, publisher: CeleryPublisher, redis_client: Redis
) -> None:
    submission = await create_submission(db)
    archive = await add_event(db, submission, outbox.ARCHIVE_SUBMISSION)
    redcap = await add_event(db, submission, outbox.REDCAP_SYNC_SUBMISSION)
    now = utcnow()

    first = await relay.relay_once(db, publisher.publish, now=now, lease=LEASE, batch=10)
    assert (first.published, first.error) == (2, None)
    assert queued(redis_client, "maintenance") == [
        (ROUTES[outbox.ARCHIVE_SUBMISSION].task_name, [str(archive.id)])
    ]
    assert queued(redis_client, "redcap") == [
        (ROUTES[outbox.REDCAP_SYNC_SUBMISSION].task_name, [str(redcap.id)])
    ]
    for event in (archive, redcap):
        await db.refresh(event)
        assert (event.published_at, event.due_at, event.status) == (
            now, now + LEASE, JobStatus.queued
        )  # fmt: skip

    # Within the lease: nothing is due, nothing is sent.
    again = await relay.relay_once(
        db, publisher.publish, now=now + LEASE / 2, lease=LEASE, batch=10
    )
    assert again.published == 0
    assert redis_client.llen("maintenance") == 1

    # The archive row finished; the REDCap one did not within its lease: sent again.
    archive.finished_at = now + timedelta(minutes=1)
    await db.flush()
    later = now + LEASE
    third = await relay.relay_once(db, publisher.publish, now=later, lease=LEASE, batch=10)
    assert third.published == 1
    assert queued_ids(redis_client, "redcap") == [str(redcap.id)] * 2
    assert redis_client.llen("maintenance") == 1
    await db.refresh(redcap)
    assert redcap.due_at == later + LEASE


async def test_a_backlog_goes_out_one_message_a_row_every_row_once_oldest_first(
    db: AsyncSession, publisher: CeleryPublisher, redis_client: Redis
) -> None:
    submission = await create_submission(db)
    payload = {"submission_id": str(submission.id)}
    topics = (outbox.ARCHIVE_SUBMISSION, outbox.REDCAP_SYNC_SUBMISSION)
    start = utcnow()
    for n in range(30):
        events = [outbox.Event(t, payload, submission.id) for t in topics]
        await outbox.add(db, events, created_at=start + timedelta(milliseconds=n))
    rows = list(await db.scalars(select(OutboxEvent).order_by(OutboxEvent.due_at)))
    now = start + timedelta(seconds=1)
    result = await relay.relay_once(db, publisher.publish, now=now, lease=LEASE, batch=100)
    assert (result.published, result.error) == (60, None)
    for queue, topic in (("maintenance", outbox.ARCHIVE_SUBMISSION),
                         ("redcap", outbox.REDCAP_SYNC_SUBMISSION)):  # fmt: skip
        messages = queued(redis_client, queue)
        assert {name for name, _ in messages} == {ROUTES[topic].task_name}
        assert queued_ids(redis_client, queue) == [str(r.id) for r in rows if r.topic == topic]


async def test_publishing_survives_a_flushed_redis(
    db: AsyncSession, publisher: CeleryPublisher, redis_client: Redis
) -> None:
    # Queue bindings gone while the connection stays up (FLUSHDB, an eviction): still delivered.
    submission = await create_submission(db)
    first = await add_event(db, submission, outbox.ARCHIVE_SUBMISSION)
    await publisher.publish([(first.topic, first.id)])
    redis_client.flushdb()
    await publisher.publish([(first.topic, first.id)])
    assert queued_ids(redis_client, "maintenance") == [str(first.id)]


async def test_a_topic_no_task_handles_fails_and_blocks_nothing(
    db: AsyncSession, publisher: CeleryPublisher, redis_client: Redis
) -> None:
    submission = await create_submission(db)
    await outbox.add(db, [outbox.Event("reports.nightly", {"study": "x"}, None)])
    stray = await db.scalar(select(OutboxEvent).where(OutboxEvent.topic == "reports.nightly"))
    assert stray is not None
    archive = await add_event(db, submission, outbox.ARCHIVE_SUBMISSION)

    result = await relay.relay_once(db, publisher.publish, now=utcnow(), lease=LEASE, batch=10)
    assert (result.published, result.failed, result.error) == (1, 1, None)
    assert queued_ids(redis_client, "maintenance") == [str(archive.id)]
    await db.refresh(stray)
    assert (stray.status, stray.published_at) == (JobStatus.failed, None)
    assert stray.error == "no task handles topic 'reports.nightly'"


async def test_a_broker_that_is_down_leaves_the_rows_waiting(db: AsyncSession) -> None:
    port = services.free_port()  # nothing listens here
    settings = make_settings(
        "postgresql+asyncpg://unused/none", REDIS_URL=f"redis://127.0.0.1:{port}/0"
    )
    publisher = CeleryPublisher.from_settings(settings)
    submission = await create_submission(db)
    events = [await add_event(db, submission, t) for t in ROUTES]
    due = [e.due_at for e in events]
    try:
        # It fails rather than waits (kombu's retry loop is off): the relay backs off itself.
        cycle = relay.relay_once(db, publisher.publish, now=utcnow(), lease=LEASE, batch=10)
        result = await asyncio.wait_for(cycle, 30)
    finally:
        publisher.close()
    assert result.published == 0 and result.error is not None
    assert "OperationalError" in result.error or "ConnectionError" in result.error
    for event, due_at in zip(events, due, strict=True):
        await db.refresh(event)
        assert (event.published_at, event.due_at, event.status) == (None, due_at, JobStatus.queued)


# --- a committed database, as the relay process sees it ---------------------------------


@pytest.fixture(scope="module")
async def committed_db() -> AsyncIterator[str]:
    name = f"metricis_relay_{uuid.uuid4().hex[:8]}"
    url = await create_database(name)
    await asyncio.to_thread(migrate, make_settings(url))
    yield url
    await drop_database(name)


@pytest.fixture
async def relay_db(committed_db: str) -> str:
    """The module's committed database, with an empty outbox."""
    engine = create_engine(make_settings(committed_db))
    try:
        async with engine.begin() as conn:
            for table in ("outbox_events",):
                await conn.execute(text(f"DELETE FROM {table}"))
    finally:
        await engine.dispose()
    return committed_db


async def add_committed(settings: Settings, topic: str, n: int) -> list[uuid.UUID]:
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as db, db.begin():
            ids = [uuid.uuid4() for _ in range(n)]
            await outbox.add(db, [outbox.Event(topic, {"submission_id": str(i)}, i) for i in ids])
            rows = await db.scalars(select(OutboxEvent.id).where(OutboxEvent.subject_id.in_(ids)))
            return list(rows)
    finally:
        await engine.dispose()


async def unpublished(settings: Settings) -> int:
    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            count = await conn.scalar(
                text("SELECT count(*) FROM outbox_events WHERE published_at IS NULL")
            )
            return int(count or 0)
    finally:
        await engine.dispose()


async def all_published(settings: Settings) -> bool:
    return await unpublished(settings) == 0


@pytest.mark.slow
async def test_relay_rides_out_a_redis_restart_without_help(relay_db: str) -> None:
    with services.own_redis() as (redis_proc, port):
        settings = make_settings(
            relay_db,
            REDIS_URL=f"redis://127.0.0.1:{port}/0",
            RELAY_INTERVAL_SECONDS=0.05,
            OUTBOX_LEASE_SECONDS=1,
        )
        redis = Redis(port=port)
        results: list[relay.RelayResult] = []
        stop = asyncio.Event()
        loop_task = asyncio.create_task(relay.run_relay(settings, stop, on_cycle=results.append))
        try:
            lost = await add_committed(settings, outbox.ARCHIVE_SUBMISSION, 2)
            await eventually(lambda: set(queued_ids(redis, "maintenance")) == set(map(str, lost)))

            redis_proc.kill()
            redis_proc.wait()
            waiting = await add_committed(settings, outbox.ARCHIVE_SUBMISSION, 3)
            failures_before = sum(1 for r in results if r.error)
            await eventually(lambda: sum(1 for r in results if r.error) >= failures_before + 2)
            assert await unpublished(settings) == 3  # they wait, untouched

            # A new, empty server on the same port: no queues, no bindings, no old connection.
            with services.redis_on(port):
                redis = Redis(port=port)
                # The 3 that waited, and the 2 whose messages died with the old server (no
                # worker ran them: their lease ran out): every one of them in the queue.
                expected = {str(i) for i in waiting + lost}
                await eventually(lambda: expected <= set(queued_ids(redis, "maintenance")))
                await eventually(lambda: all_published(settings))
                assert results[-1].error is None
                stop.set()
                await asyncio.wait_for(loop_task, 10)
        finally:
            stop.set()
            if not loop_task.done():
                loop_task.cancel()


@pytest.mark.slow
async def test_the_relay_command_runs_until_told_to_stop(relay_db: str) -> None:
    with services.own_redis() as (_redis, port):
        settings = make_settings(relay_db, REDIS_URL=f"redis://127.0.0.1:{port}/0")
        env = os.environ | {
            "ENVIRONMENT": "test",
            "DATABASE_URL": relay_db,
            "REDIS_URL": settings.REDIS_URL,
            "JWT_SECRET_KEY": "relay-" + "r" * 40,
            "RELAY_INTERVAL_SECONDS": "0.1",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "server", "relay"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            ids = await add_committed(settings, outbox.REDCAP_SYNC_SUBMISSION, 2)
            redis = Redis(port=port)
            await eventually(lambda: len(queued_ids(redis, "redcap")) == 2)
            assert sorted(queued_ids(redis, "redcap")) == sorted(map(str, ids))
        finally:
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0, output.decode()
        assert b"relay_published" in output and b"relay_stopped" in output


@pytest.mark.slow
async def test_two_relays_never_take_the_same_rows(relay_db: str) -> None:
    settings = make_settings(relay_db)
    engine = create_engine(settings)
    sessions = create_sessionmaker(engine)
    await add_committed(settings, outbox.ARCHIVE_SUBMISSION, 3)
    holding = asyncio.Event()
    release = asyncio.Event()
    first_sent: list[uuid.UUID] = []
    second_sent: list[uuid.UUID] = []

    async def slow_publish(messages: Sequence[tuple[str, uuid.UUID]]) -> None:
        first_sent.extend(event_id for _, event_id in messages)
        holding.set()
        await release.wait()

    async def publish(messages: Sequence[tuple[str, uuid.UUID]]) -> None:
        second_sent.extend(event_id for _, event_id in messages)

    async def first_relay() -> relay.RelayResult:
        async with sessions() as db:
            result = await relay.relay_once(db, slow_publish, now=utcnow(), lease=LEASE, batch=10)
            await db.commit()
            return result

    try:
        first = asyncio.create_task(first_relay())
        await holding.wait()
        async with sessions() as db:
            # The first relay holds its batch: the second skips those rows, it does not wait.
            second = await asyncio.wait_for(
                relay.relay_once(db, publish, now=utcnow(), lease=LEASE, batch=10), 5
            )
            await db.commit()
        release.set()
        assert (await first).published == 3
        assert second.published == 0 and second_sent == []
        async with sessions() as db:
            third = await relay.relay_once(db, publish, now=utcnow(), lease=LEASE, batch=10)
        assert third.published == 0 and len(first_sent) == 3
    finally:
        release.set()
        await engine.dispose()
