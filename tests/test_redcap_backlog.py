"""The REDCap sync's backlog path, as the worker's task runs it: on an engine of its own (the
test transaction's connection turns the backlog off), so this test has a database of its own.
REDCap is the stand-in server over HTTP; the sync's throttle uses the test Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from server.cli import migrate
from server.core.config import Settings
from server.core.db import create_engine, create_sessionmaker
from server.redcap import service as redcap_service
from server.redcap.models import RedcapSyncState, SyncStatus
from server.redcap.schemas import ConnectionCreate, MappingIn
from server.redcap.sync import BACKLOG_SECONDS, sync_submission
from tests.conftest import create_database, drop_database, make_settings
from tests.redcap_standin import RedcapStandin, classic_project
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


@pytest.fixture
def classic() -> Iterator[RedcapStandin]:
    yield from running(classic_project())


@pytest.fixture
async def own_database() -> AsyncIterator[Settings]:
    """A migrated database of this test's own, committed to for real."""
    name = f"metricis_backlog_{uuid.uuid4().hex[:8]}"
    settings = make_settings(await create_database(name))
    await asyncio.to_thread(migrate, settings)
    yield settings
    await drop_database(name)


async def test_a_backlog_syncs_in_order(own_database: Settings, classic: RedcapStandin) -> None:
    settings = own_database
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
                assert [row.finished_at is not None for row in rows] == [True]
    finally:
        await engine.dispose()
