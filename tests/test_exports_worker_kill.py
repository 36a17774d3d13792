"""kill -9 of the worker mid-export: the job comes back through the relay once its lease is
over, a new worker builds the export from the start, and no half-written file is ever
offered (no object under the export's key, no link, until the zip is whole).

Real processes (tests.e2e): PostgreSQL database, redis-server, `python -m server relay` and
a prefork Celery worker consuming the exports queue, killed with SIGKILL as a group. The
first worker pauses after each streamed block (EXPORT_TEST_PAUSE_SECONDS) so that the kill
lands inside the build.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.exports import service as exports_service
from server.exports.models import Export
from server.exports.schemas import ExportCreate
from server.outbox.models import JobStatus, OutboxEvent
from server.studies.access import StudyAccess
from tests import export_factories as ef
from tests.e2e.stack import Stack, dead_letters, open_stack

pytestmark = pytest.mark.slow

LEASE_S = 8


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with open_stack(tmp_path) as stack:
        yield stack


async def _rows(stack: Stack, export_id: object) -> tuple[Export, OutboxEvent]:
    async with stack.sessions() as db:
        export = await db.get(Export, export_id)
        assert export is not None and export.job_id is not None
        job = await db.get(OutboxEvent, export.job_id)
        assert job is not None
        return export, job


async def test_a_worker_killed_mid_export_leaves_nothing_offered_and_the_retry_completes(
    stack: Stack,
) -> None:
    seeded = await ef.seed(stack.sessions, stack.settings)
    stack.start_relay(OUTBOX_LEASE_SECONDS=LEASE_S)
    first = await stack.start_worker(
        "first", OUTBOX_LEASE_SECONDS=LEASE_S, EXPORT_TEST_PAUSE_SECONDS=1.5
    )
    async with stack.sessions() as db, db.begin():
        export = await exports_service.create(
            db,
            access=StudyAccess(study=seeded.study, role=None),
            user_id=seeded.user_id,
            request=ExportCreate(formats=["csv", "parquet", "sav", "dta"]),
        )
    key = f"exports/{seeded.study.id}/{export.id}.zip"
    archive = Path(stack.settings.ARCHIVE_DIR)

    async def streaming() -> bool:
        row, job = await _rows(stack, export.id)
        return job.status == JobStatus.running and row.rows_total is not None

    await stack.wait_for(streaming, timeout=30, what="the export to start streaming")
    first.kill()
    row, job = await _rows(stack, export.id)
    assert (job.status, job.attempts) == (JobStatus.running, 1)
    # Nothing offered: no key on the row, no object (nor a stray file) in the archive.
    assert row.storage_key is None
    assert not (archive / key).exists()
    assert not list(archive.rglob("*.zip"))

    second = await stack.start_worker("second", OUTBOX_LEASE_SECONDS=LEASE_S)

    async def built() -> bool:
        _row, job = await _rows(stack, export.id)
        return job.status == JobStatus.succeeded

    await stack.wait_for(built, timeout=LEASE_S + 40, what="the export after the kill")
    row, job = await _rows(stack, export.id)
    assert job.attempts == 2 and job.error is None
    assert row.storage_key == key and row.rows_done == row.rows_total
    data = (archive / key).read_bytes()
    files = ef.members(data)
    assert {"manifest.json", "codebook.csv", "trials_simple_rt_v1.sav"} <= set(files)
    assert await dead_letters(stack) == []
    assert "task_succeeded" in second.output()


async def test_an_export_longer_than_the_tasks_time_limit_completes(stack: Stack) -> None:
    """Every other task is cut off at OUTBOX_LEASE_SECONDS; an export streams a whole study
    and has its own limit (EXPORT_TIME_LIMIT_SECONDS), so a long one finishes first time."""
    seeded = await ef.seed(stack.sessions, stack.settings)
    stack.start_relay(OUTBOX_LEASE_SECONDS=2)
    # Three modules, at least one streamed block each: 4.5 s or more against a 2 s limit.
    worker = await stack.start_worker("slow", OUTBOX_LEASE_SECONDS=2, EXPORT_TEST_PAUSE_SECONDS=1.5)
    async with stack.sessions() as db, db.begin():
        export = await exports_service.create(
            db,
            access=StudyAccess(study=seeded.study, role=None),
            user_id=seeded.user_id,
            request=ExportCreate(formats=["csv"]),
        )

    async def settled() -> bool:
        _row, job = await _rows(stack, export.id)
        return job.status in (JobStatus.succeeded, JobStatus.failed)

    await stack.wait_for(settled, timeout=60, what="the slow export")
    row, job = await _rows(stack, export.id)
    assert (job.status, job.attempts, job.error) == (JobStatus.succeeded, 1, None)
    assert row.storage_key is not None and row.rows_done == row.rows_total
    assert "TimeLimitExceeded" not in worker.output()
