"""Real Celery worker processes (prefork, one child) on the test's own Redis and a committed
database: a submission goes through the relay, Redis and a worker to its archive object; a
transient failure retries until it clears; a permanent one is a dead letter that a rerun sends
through again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from redis import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from server.cli import migrate
from server.core.config import Settings
from server.core.db import create_engine, create_sessionmaker
from server.main import create_app
from server.outbox.models import JobStatus, OutboxEvent
from server.outbox.topics import ROUTES
from tests import factories, services
from tests.bench.ingest import seed
from tests.conftest import create_database, drop_database, make_settings
from tests.services import eventually
from workers import relay
from workers.app import app as celery_app
from workers.publisher import CeleryPublisher

ROOT = Path(__file__).resolve().parent.parent
SECRET = "worker-tests-" + "w" * 40
ARCHIVE = "archive.submission"

pytestmark = pytest.mark.slow


@dataclass
class Stack:
    settings: Settings
    engine: AsyncEngine
    tmp: Path


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """A committed database and a redis-server of the test's own."""
    name = f"metricis_worker_{uuid.uuid4().hex[:8]}"
    url = await create_database(name)
    await asyncio.to_thread(migrate, make_settings(url))
    with services.own_redis() as (_redis, port):
        settings = make_settings(
            url,
            JWT_SECRET_KEY=SECRET,
            REDIS_URL=f"redis://127.0.0.1:{port}/0",
            ARCHIVE_DIR=str(tmp_path / "archive"),
            RELAY_INTERVAL_SECONDS=0.1,
        )
        engine = create_engine(settings)
        try:
            yield Stack(settings, engine, tmp_path)
        finally:
            await engine.dispose()
    await drop_database(name)


@contextmanager
def worker(stack: Stack, log_name: str, queues: str = "maintenance", **env: str) -> Iterator[Path]:
    """`celery -A workers.app worker -Q <queues> --pool=prefork -c 1`, stopped warmly."""
    log = stack.tmp / log_name
    environment = os.environ | {
        "ENVIRONMENT": "test",
        "DATABASE_URL": stack.settings.DATABASE_URL,
        "REDIS_URL": stack.settings.REDIS_URL,
        "JWT_SECRET_KEY": SECRET,
        "ARCHIVE_DIR": stack.settings.ARCHIVE_DIR,
        "LOG_LEVEL": "INFO",
    }
    environment |= env
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.app",
                "worker",
                "-Q",
                queues,
                "--pool=prefork",
                "-c",
                "1",
                "-n",
                f"test-{uuid.uuid4().hex[:6]}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel=INFO",
            ],
            cwd=ROOT,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield log
        finally:
            proc.send_signal(signal.SIGTERM)  # warm shutdown: finish the task in hand
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@asynccontextmanager
async def relaying(settings: Settings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run_relay(settings, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def submit(stack: Stack) -> uuid.UUID:
    """A real submission through the API, committed with its two outbox rows."""
    token, template = await seed(stack.settings.DATABASE_URL, SECRET)
    app = create_app(stack.settings)
    try:
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as http:
            response = await http.post(
                "/api/submit",
                content=template.replace(b"__KEY__", uuid.uuid4().hex.encode()),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
    finally:
        await app.state.engine.dispose()
        await app.state.redis.aclose()
    assert response.status_code == 201, response.text
    return uuid.UUID(response.json()["submission_id"])


async def archive_job(stack: Stack, submission_id: uuid.UUID) -> OutboxEvent | None:
    async with create_sessionmaker(stack.engine)() as db:
        job: OutboxEvent | None = await db.scalar(
            select(OutboxEvent).where(
                OutboxEvent.subject_id == submission_id, OutboxEvent.topic == ARCHIVE
            )
        )
        return job


async def wait_for_job(
    stack: Stack, submission_id: uuid.UUID, log: Path, **expected: Any
) -> OutboxEvent:
    """The submission's archive job, once it shows `expected` (attempts: at least)."""
    found: list[OutboxEvent] = []

    async def reached() -> bool:
        job = await archive_job(stack, submission_id)
        found[:] = [job] if job is not None else []
        return job is not None and all(
            (getattr(job, k) >= v if k == "attempts" else getattr(job, k) == v)
            for k, v in expected.items()
        )

    def why() -> str:
        tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        return f"job never reached {expected}: {found and vars(found[0])}\n--- log\n{tail}"

    await eventually(reached, timeout=30, what=why)
    return found[0]


def test_the_worker_registers_every_topics_task_on_its_queue() -> None:
    celery_app.loader.import_default_modules()
    for topic, route in ROUTES.items():
        assert route.task_name in celery_app.tasks, topic
        routed = celery_app.amqp.router.route({}, route.task_name)
        assert routed["queue"].name == route.queue, topic


async def test_a_submission_is_archived_end_to_end(stack: Stack) -> None:
    submission_id = await submit(stack)
    with worker(stack, "worker.log") as log:
        async with relaying(stack.settings):
            job = await wait_for_job(stack, submission_id, log, status=JobStatus.succeeded)
        assert job.attempts == 1 and job.error is None

        # The same row once more (published again after a lease): a no-op.
        publisher = CeleryPublisher.from_settings(stack.settings)
        try:
            await publisher.publish([(ARCHIVE, job.id)])
        finally:
            publisher.close()
        # Waiting on the worker's word, not on an empty queue: a message taken off the list is
        # in neither the list nor "unacked" for a moment, before the worker has run it.
        await eventually(
            lambda: b"task_skipped" in log.read_bytes() and b"'skipped'" in log.read_bytes(),
            what=lambda: log.read_text()[-3000:],
        )
        assert b"'succeeded'" in log.read_bytes()
        redis = Redis.from_url(stack.settings.REDIS_URL)
        await eventually(
            lambda: not (redis.llen("maintenance") or redis.hlen("unacked")),
            what=lambda: "the copy was never acknowledged",
        )
    again = await archive_job(stack, submission_id)
    assert again is not None
    assert (again.attempts, again.finished_at) == (1, job.finished_at)
    assert job.result_location is not None
    archived = Path(stack.settings.ARCHIVE_DIR) / job.result_location
    assert archived.is_file() and f"submissions/{submission_id}.json" in job.result_location
    async with create_sessionmaker(stack.engine)() as db:
        events = {
            e.topic: e
            for e in await db.scalars(
                select(OutboxEvent).where(OutboxEvent.subject_id == submission_id)
            )
        }
    assert events[ARCHIVE].finished_at is not None
    # Published too, but no worker here listens on the redcap queue: it waits in Redis.
    redcap = events["redcap.sync_submission"]
    assert redcap.published_at is not None and redcap.finished_at is None


async def test_a_transient_failure_retries_until_it_clears(stack: Stack) -> None:
    # The archive directory's place is taken by a file: writing fails with an OSError.
    blocked = Path(stack.settings.ARCHIVE_DIR)
    blocked.write_text("not a directory")
    submission_id = await submit(stack)
    with worker(stack, "worker.log", TASK_RETRY_BACKOFF_MAX="1", TASK_MAX_RETRIES="20") as log:
        async with relaying(stack.settings):
            retrying = await wait_for_job(
                stack, submission_id, log, status=JobStatus.retrying, attempts=2
            )
            assert retrying.error is not None and "Error" in retrying.error
            blocked.unlink()
            job = await wait_for_job(stack, submission_id, log, status=JobStatus.succeeded)
    assert job.attempts >= 3 and job.error is None
    assert (Path(stack.settings.ARCHIVE_DIR) / str(job.result_location)).is_file()
    async with create_sessionmaker(stack.engine)() as db:
        failed = select(OutboxEvent.id).where(OutboxEvent.status == JobStatus.failed)
        assert await db.scalar(failed) is None


async def test_a_permanent_failure_is_a_dead_letter_and_a_rerun_sends_it_again(
    stack: Stack,
) -> None:
    submission_id = await submit(stack)
    # S3 without a bucket: a configuration error, not worth retrying.
    with worker(stack, "broken.log", ARCHIVE_BACKEND="s3", ARCHIVE_S3_BUCKET="") as log:
        async with relaying(stack.settings):
            failed = await wait_for_job(stack, submission_id, log, status=JobStatus.failed)
    assert failed.attempts == 1
    assert failed.error is not None and failed.error.startswith("ConfigurationError")
    async with create_sessionmaker(stack.engine)() as db, db.begin():
        admin = await factories.create_user(db, is_admin=True)
        headers = await factories.auth_headers(db, stack.settings, admin)

    app = create_app(stack.settings)
    try:
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as http:
            rerun = await http.post(f"/api/dead-letters/{failed.id}/rerun", headers=headers)
    finally:
        await app.state.engine.dispose()
        await app.state.redis.aclose()
    assert rerun.status_code == 200, rerun.text

    with worker(stack, "fixed.log") as log:
        async with relaying(stack.settings):
            job = await wait_for_job(stack, submission_id, log, status=JobStatus.succeeded)
    assert job.attempts == 1  # a fresh budget after the rerun
    assert (Path(stack.settings.ARCHIVE_DIR) / str(job.result_location)).is_file()
