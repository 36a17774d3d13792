"""The outbox relay against real Redis: publish once, again after the lease, and ride out a
Redis that dies and comes back as a new, empty server on the same port."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
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
from server.jobs.models import DeadLetter, Job, JobStatus
from server.outbox import service as outbox
from server.outbox.models import OutboxEvent
from server.outbox.topics import ROUTES
from tests import services
from tests.conftest import create_database, drop_database, make_settings
from tests.services import eventually
from tests.test_jobs import add_event, create_submission
from workers import relay, relay_cycle
from workers.publisher import EVENTS_PER_MESSAGE, CeleryPublisher

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
    """The event ids in a Celery queue, message after message (a message carries a list)."""
    ids: list[str] = []
    for _task, [event_ids] in queued(redis, queue):
        ids += [event_ids] if isinstance(event_ids, str) else event_ids
    return ids


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

    first = await relay_cycle.relay_once(db, publisher, now=now, lease=LEASE, batch=10)
    assert (first.published, first.republished, first.jobs_created, first.error) == (2, 0, 2, None)
    assert queued(redis_client, "maintenance") == [
        (ROUTES[outbox.ARCHIVE_SUBMISSION].task_name, [[str(archive.id)]])
    ]
    assert queued(redis_client, "redcap") == [
        (ROUTES[outbox.REDCAP_SYNC_SUBMISSION].task_name, [[str(redcap.id)]])
    ]
    for event in (archive, redcap):
        await db.refresh(event)
        assert (event.published_at, event.lease_until) == (now, now + LEASE)
        assert event.publish_attempts == 1 and event.completed_at is None
    jobs = list(await db.scalars(select(Job).where(Job.subject_id == submission.id)))
    assert {(j.kind, j.status, j.study_id, j.outbox_event_id) for j in jobs} == {
        (outbox.ARCHIVE_SUBMISSION, JobStatus.queued, submission.study_id, archive.id),
        (outbox.REDCAP_SYNC_SUBMISSION, JobStatus.queued, submission.study_id, redcap.id),
    }

    # Within the lease: nothing is due, nothing is sent.
    again = await relay_cycle.relay_once(db, publisher, now=now + LEASE / 2, lease=LEASE, batch=10)
    assert again.published == 0
    assert redis_client.llen("maintenance") == 1

    # The archive task reported done; the REDCap one did not within its lease: sent again,
    # with a lease twice as long, and no second job.
    archive.completed_at = now + timedelta(minutes=1)
    await db.flush()
    later = now + LEASE + timedelta(seconds=1)
    third = await relay_cycle.relay_once(db, publisher, now=later, lease=LEASE, batch=10)
    assert (third.published, third.republished, third.jobs_created) == (1, 1, 0)
    assert [args for _, args in queued(redis_client, "redcap")] == [[[str(redcap.id)]]] * 2
    assert redis_client.llen("maintenance") == 1
    await db.refresh(redcap)
    assert redcap.publish_attempts == 2 and redcap.lease_until == later + 2 * LEASE
    assert await db.scalar(select(Job.id).where(Job.outbox_event_id == redcap.id)) is not None


async def test_a_backlog_goes_out_as_few_messages_every_row_once_in_order(
    db: AsyncSession, publisher: CeleryPublisher, redis_client: Redis
) -> None:
    # Rows of two topics interleaved: each topic's go together, EVENTS_PER_MESSAGE a message.
    submission = await create_submission(db)
    payload = {"submission_id": str(submission.id)}
    topics = (outbox.ARCHIVE_SUBMISSION, outbox.REDCAP_SYNC_SUBMISSION)
    per_topic = 2 * EVENTS_PER_MESSAGE + 3
    await outbox.add(
        db, [outbox.Event(t, payload, submission.id) for _ in range(per_topic) for t in topics]
    )
    events = list(
        await db.scalars(select(OutboxEvent).order_by(OutboxEvent.created_at, OutboxEvent.id))
    )
    assert len(events) == 2 * per_topic
    result = await relay_cycle.relay_once(
        db, publisher, now=utcnow(), lease=LEASE, batch=len(events)
    )
    assert (result.published, result.jobs_created, result.error) == (len(events), len(events), None)
    for queue, topic in (("maintenance", outbox.ARCHIVE_SUBMISSION),
                         ("redcap", outbox.REDCAP_SYNC_SUBMISSION)):  # fmt: skip
        messages = queued(redis_client, queue)
        assert {name for name, _ in messages} == {ROUTES[topic].task_name}
        assert [len(ids) for _, [ids] in messages] == [EVENTS_PER_MESSAGE, EVENTS_PER_MESSAGE, 3]
        sent = [event_id for _, [ids] in messages for event_id in ids]
        assert sent == [str(e.id) for e in events if e.topic == topic]


async def test_a_full_queue_holds_its_topics_new_rows_in_the_outbox(
    db: AsyncSession, publisher: CeleryPublisher, redis_client: Redis
) -> None:
    submission = await create_submission(db)
    for _ in range(3):
        await outbox.add(db, [outbox.Event(outbox.ARCHIVE_SUBMISSION, {}, submission.id)])
    archive = list(
        await db.scalars(
            select(OutboxEvent)
            .where(OutboxEvent.topic == outbox.ARCHIVE_SUBMISSION)
            .order_by(OutboxEvent.created_at)
        )
    )
    redcap = await add_event(db, submission, outbox.REDCAP_SYNC_SUBMISSION)
    await outbox.add(db, [outbox.Event("reports.nightly", {}, None)])
    limit = 2
    assert await relay_cycle.held_topics(publisher, limit) == frozenset()

    # Two messages wait in the maintenance queue (no worker takes them): it is full.
    for event in archive[:2]:
        await publisher(event.topic, event.id)
    held = await relay_cycle.held_topics(publisher, limit)
    assert held == {outbox.ARCHIVE_SUBMISSION}
    result = await relay_cycle.relay_once(
        db, publisher, now=utcnow(), lease=LEASE, batch=10, held=held
    )
    # The REDCap row goes; the archive rows wait unpublished; a topic no task handles is
    # dead-lettered all the same.
    assert (result.published, result.dead_lettered) == (1, 1)
    assert queued_ids(redis_client, "redcap") == [str(redcap.id)]
    assert redis_client.llen("maintenance") == 2
    for event in archive:
        await db.refresh(event)
        assert (event.published_at, event.completed_at) == (None, None)

    # The workers catch up: the queue takes rows again, the oldest first.
    redis_client.delete("maintenance")
    held = await relay_cycle.held_topics(publisher, limit)
    assert held == frozenset()
    result = await relay_cycle.relay_once(
        db, publisher, now=utcnow(), lease=LEASE, batch=10, held=held
    )
    assert result.published == 3
    assert queued_ids(redis_client, "maintenance") == [str(e.id) for e in archive]


async def test_publishing_survives_a_flushed_redis(
    db: AsyncSession, publisher: CeleryPublisher, redis_client: Redis
) -> None:
    # Queue bindings gone while the connection stays up (FLUSHDB, an eviction): still delivered.
    submission = await create_submission(db)
    first = await add_event(db, submission, outbox.ARCHIVE_SUBMISSION)
    await publisher(first.topic, first.id)
    redis_client.flushdb()
    await publisher(first.topic, first.id)
    assert [args for _, args in queued(redis_client, "maintenance")] == [[str(first.id)]]


def test_leases_grow_with_each_publish() -> None:
    assert [relay_cycle.lease_for(LEASE, n) / LEASE for n in (1, 2, 3, 4, 5, 9)] == [
        1,
        2,
        4,
        8,
        8,
        8,
    ]


async def test_a_topic_no_task_handles_is_a_dead_letter_and_blocks_nothing(
    db: AsyncSession, publisher: CeleryPublisher, redis_client: Redis
) -> None:
    submission = await create_submission(db)
    await outbox.add(db, [outbox.Event("reports.nightly", {"study": "x"}, None)])
    stray = await db.scalar(select(OutboxEvent).where(OutboxEvent.topic == "reports.nightly"))
    assert stray is not None
    archive = await add_event(db, submission, outbox.ARCHIVE_SUBMISSION)

    result = await relay_cycle.relay_once(db, publisher, now=utcnow(), lease=LEASE, batch=10)
    assert (result.published, result.dead_lettered, result.error) == (1, 1, None)
    assert [args for _, args in queued(redis_client, "maintenance")] == [[[str(archive.id)]]]
    await db.refresh(stray)
    assert stray.completed_at is not None and stray.published_at is None
    dead = await db.scalar(
        select(DeadLetter).where(DeadLetter.task_name == relay_cycle.UNROUTED_TASK)
    )
    assert dead is not None and dead.error == "no task handles topic 'reports.nightly'"


async def test_a_broker_that_is_down_leaves_the_rows_waiting(db: AsyncSession) -> None:
    port = services.free_port()  # nothing listens here
    settings = make_settings(
        "postgresql+asyncpg://unused/none", REDIS_URL=f"redis://127.0.0.1:{port}/0"
    )
    publisher = CeleryPublisher.from_settings(settings)
    submission = await create_submission(db)
    events = [await add_event(db, submission, t) for t in ROUTES]
    try:
        started = time.monotonic()
        result = await relay_cycle.relay_once(db, publisher, now=utcnow(), lease=LEASE, batch=10)
        assert time.monotonic() - started < 5
    finally:
        publisher.close()
    assert result.published == 0 and result.error is not None
    assert "OperationalError" in result.error or "ConnectionError" in result.error
    for event in events:
        await db.refresh(event)
        assert (event.published_at, event.lease_until, event.publish_attempts) == (None, None, 0)
    assert await db.scalar(select(Job.id).where(Job.subject_id == submission.id)) is None


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
            for table in ("dead_letters", "jobs", "outbox_events"):
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
            relay_db, REDIS_URL=f"redis://127.0.0.1:{port}/0", RELAY_INTERVAL_SECONDS=0.05
        )
        redis = Redis(port=port)
        results: list[relay_cycle.RelayResult] = []
        stop = asyncio.Event()
        loop_task = asyncio.create_task(relay.run_relay(settings, stop, on_cycle=results.append))
        try:
            lost = await add_committed(settings, outbox.ARCHIVE_SUBMISSION, 2)
            await eventually(lambda: len(queued_ids(redis, "maintenance")) == 2)

            redis_proc.kill()
            redis_proc.wait()
            waiting = await add_committed(settings, outbox.ARCHIVE_SUBMISSION, 3)
            failures_before = sum(1 for r in results if r.error)
            await eventually(lambda: sum(1 for r in results if r.error) >= failures_before + 2)
            assert await unpublished(settings) == 3  # they wait, untouched

            # A new, empty server on the same port: no queues, no bindings, no old connection.
            with services.redis_on(port):
                redis = Redis(port=port)
                # The 3 that waited, and the 2 whose messages died with the old server: sent
                # again at once (it is a new server), not when their lease runs out.
                await eventually(lambda: len(queued_ids(redis, "maintenance")) == 5, timeout=15)
                assert sorted(queued_ids(redis, "maintenance")) == sorted(
                    str(i) for i in waiting + lost
                )

                # Published first, recorded when the relay's transaction commits just after.
                await eventually(lambda: all_published(settings))
                assert results[-1].ok
                stop.set()
                await asyncio.wait_for(loop_task, 10)
        finally:
            stop.set()
            if not loop_task.done():
                loop_task.cancel()


class EpochReadFails:
    """The real publisher, whose broker_epoch fails while `failing` is set: a read that reached
    the old server just before it died, or the new one just before it listened."""

    def __init__(self, publisher: CeleryPublisher) -> None:
        self.publisher = publisher
        self.failing = False
        self.reads = 0

    async def broker_epoch(self) -> str | None:
        self.reads += 1
        if self.failing:
            raise ConnectionError("Error 111 connecting: Connection refused.")
        return await self.publisher.broker_epoch()

    async def __call__(self, topic: str, event_id: uuid.UUID) -> None:
        await self.publisher(topic, event_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.publisher, name)


@pytest.mark.slow
async def test_rows_sent_to_a_new_server_before_the_relay_knows_it_are_not_sent_twice(
    relay_db: str,
) -> None:
    with services.own_redis() as (redis_proc, port):
        settings = make_settings(
            relay_db, REDIS_URL=f"redis://127.0.0.1:{port}/0", RELAY_INTERVAL_SECONDS=0.05
        )
        publisher = EpochReadFails(CeleryPublisher.from_settings(settings))
        stop = asyncio.Event()
        loop_task = asyncio.create_task(relay.run_relay(settings, stop, publish=publisher))  # type: ignore[arg-type]
        try:
            lost = await add_committed(settings, outbox.ARCHIVE_SUBMISSION, 2)
            await eventually(lambda: len(queued_ids(Redis(port=port), "maintenance")) == 2)

            # The server dies and a new one is up before the relay's next epoch read, which
            # fails anyway: the broker answers the publish that follows in the same cycle.
            publisher.failing = True
            redis_proc.kill()
            redis_proc.wait()
            with services.redis_on(port):
                waiting = await add_committed(settings, outbox.ARCHIVE_SUBMISSION, 3)
                reads = publisher.reads
                await eventually(lambda: publisher.reads >= reads + 3)
                publisher.failing = False

                redis = Redis(port=port)
                await eventually(lambda: len(queued_ids(redis, "maintenance")) >= 5, timeout=15)
                await eventually(lambda: all_published(settings))
                await asyncio.sleep(0.3)  # a few more cycles: nothing more is sent
                assert sorted(queued_ids(redis, "maintenance")) == sorted(
                    str(i) for i in waiting + lost
                )
                stop.set()
                await asyncio.wait_for(loop_task, 10)
        finally:
            stop.set()
            if not loop_task.done():
                loop_task.cancel()
            publisher.publisher.close()


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

    async def slow_publish(topic: str, event_id: uuid.UUID) -> None:
        first_sent.append(event_id)
        holding.set()
        await release.wait()

    async def publish(topic: str, event_id: uuid.UUID) -> None:
        second_sent.append(event_id)

    async def first_relay() -> relay_cycle.RelayResult:
        async with sessions() as db:
            result = await relay_cycle.relay_once(
                db, slow_publish, now=utcnow(), lease=LEASE, batch=10
            )
            await db.commit()
            return result

    try:
        first = asyncio.create_task(first_relay())
        await holding.wait()
        async with sessions() as db:
            # The first relay holds its batch: the second skips those rows, it does not wait.
            second = await asyncio.wait_for(
                relay_cycle.relay_once(db, publish, now=utcnow(), lease=LEASE, batch=10), 5
            )
            await db.commit()
        release.set()
        assert (await first).published == 3
        assert second.published == 0 and second_sent == []
        async with sessions() as db:
            third = await relay_cycle.relay_once(db, publish, now=utcnow(), lease=LEASE, batch=10)
        assert third.published == 0 and len(first_sent) == 3
    finally:
        release.set()
        await engine.dispose()
