"""The embedded default: what `make run` starts on a machine with only Python, a SQLite file
and kombu's filesystem broker, which the product ships. Here SQLite and that broker are the
database and broker under test, not stand-ins for PostgreSQL and Redis: these tests cover the
portable code paths only the embedded default takes (no FOR UPDATE, upserts in place of the
PostgreSQL statements, the relay's ORM path). The same behaviours on PostgreSQL and Redis are
tests/test_relay.py's and tests/test_redcap_sync.py's. REDCap is the stand-in server over
HTTP; the sync's throttle uses the test Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from server.cli import migrate
from server.core.config import Settings
from server.core.db import create_engine, create_sessionmaker
from server.core.models import utcnow
from server.jobs.models import Job, JobStatus
from server.outbox import relay
from server.outbox.topics import ROUTES
from server.redcap import service as redcap_service
from server.redcap.models import RedcapSyncState, SyncStatus
from server.redcap.schemas import ConnectionCreate, MappingIn
from server.redcap.sync import BACKLOG_SECONDS, sync_submission
from tests.conftest import make_settings
from tests.redcap_standin import RedcapStandin, classic_project
from tests.test_jobs import add_event, create_submission
from tests.test_redcap_support import (
    direct_submission,
    instances,
    make_world,
    participant,
    running,
    session_mapping,
    sync_outbox_rows,
)
from tests.test_redcap_sync import GOOD, ago
from tests.test_relay import LEASE
from workers.publisher import CeleryPublisher


@pytest.fixture
def classic() -> Iterator[RedcapStandin]:
    yield from running(classic_project())


async def embedded(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for make run's SQLite file, migrated."""
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'metricis.db'}", **overrides)
    await asyncio.to_thread(migrate, settings)
    return settings


async def test_a_backlog_syncs_in_order_on_sqlite(tmp_path: Path, classic: RedcapStandin) -> None:
    settings = await embedded(tmp_path)
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as db:
            world = await make_world(db, settings)
            connection = await redcap_service.create_connection(
                db,
                settings,
                study_id=world.study.id,
                connection_in=ConnectionCreate(
                    api_url=classic.url, token=classic.token, batch_size=2
                ),
            )
            await redcap_service.save_mapping(
                db,
                settings,
                connection=connection,
                mapping_in=MappingIn.model_validate(session_mapping(world)),
            )
            ann = await participant(db, world, "P-ANN")
            bob = await participant(db, world, "P-BOB")
            ids = [
                await direct_submission(
                    db, world, who, summary={**GOOD, "n_trials": 10 + n}, received_at=ago(30 - n)
                )
                for n, who in enumerate([ann, bob, ann, ann, bob])
            ]
            await db.commit()

        # One task, as the worker runs it: its batch of 2, then the rest of the backlog.
        async with create_sessionmaker(engine)() as db, db.begin():
            outcome = await sync_submission(db, settings, ids[0], backlog_seconds=BACKLOG_SECONDS)
        assert (outcome.status, outcome.batch, outcome.backlog_batches) == ("synced", 2, 2)

        stored = sorted((r, int(i), row["srt_n_trials"]) for r, i, row in instances(classic))
        assert stored == [("P-ANN", 1, "10"), ("P-ANN", 2, "12"), ("P-ANN", 3, "13"),
                          ("P-BOB", 1, "11"), ("P-BOB", 2, "14")]  # fmt: skip
        async with create_sessionmaker(engine)() as db:
            for submission_id in ids:
                state = await db.get(RedcapSyncState, submission_id)
                assert state is not None and state.status == SyncStatus.synced
            # The others' sync rows completed with their batch: their tasks have nothing to do.
            for submission_id in ids[1:]:
                rows = await sync_outbox_rows(db, submission_id)
                assert [row.completed_at is not None for row in rows] == [True]
    finally:
        await engine.dispose()


async def test_the_embedded_default_relays_on_sqlite(tmp_path: Path) -> None:
    # make run's own database and broker: a SQLite file and kombu's filesystem transport, the
    # relay's portable path (on PostgreSQL, the tests above). No Redis, as in make run.
    settings = await embedded(tmp_path, REDIS_URL="", BROKER_DIR=str(tmp_path / "broker"))
    engine = create_engine(settings)
    publisher = CeleryPublisher.from_settings(settings)
    queues = sorted({route.queue for route in ROUTES.values()})
    try:
        async with create_sessionmaker(engine)() as db:
            submission = await create_submission(db)
            events = {t: await add_event(db, submission, t) for t in ROUTES}
            await db.commit()
            now = utcnow()
            first = await relay.relay_once(db, publisher, now=now, lease=LEASE, batch=10)
            await db.commit()
            assert (first.published, first.jobs_created, first.error) == (2, 2, None)
            assert await publisher.queue_depths(queues) == {q: 1 for q in queues}
            jobs = list(await db.scalars(select(Job).where(Job.subject_id == submission.id)))
            assert {(j.kind, j.status, j.study_id) for j in jobs} == {
                (t, JobStatus.queued, submission.study_id) for t in ROUTES
            }
            later = now + LEASE + timedelta(seconds=1)
            again = await relay.relay_once(db, publisher, now=later, lease=LEASE, batch=10)
            await db.commit()
            assert (again.published, again.republished, again.jobs_created) == (2, 2, 0)
            assert await publisher.queue_depths(queues) == {q: 2 for q in queues}
            for event in events.values():
                await db.refresh(event)
                assert (event.publish_attempts, event.lease_until) == (2, later + 2 * LEASE)
    finally:
        publisher.close()
        await engine.dispose()
