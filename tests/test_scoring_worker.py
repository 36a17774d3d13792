"""The scoring task through the real path: the API stores a submission with its outbox rows,
the relay publishes them, a prefork Celery worker scores it (tests/test_worker.py's stack)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from server.core.db import create_sessionmaker
from server.outbox.models import JobStatus, OutboxEvent
from server.scoring.models import QualityCheck, TaskScore
from tests.services import eventually
from tests.test_worker import Stack, relaying, stack, submit, worker

__all__ = ["stack"]  # the fixture, used by name

pytestmark = pytest.mark.slow


async def test_a_submission_is_scored_by_the_worker(stack: Stack) -> None:
    submission_id = await submit(stack)
    sessionmaker = create_sessionmaker(stack.engine)

    async def scoring_job() -> OutboxEvent | None:
        async with sessionmaker() as db:
            job: OutboxEvent | None = await db.scalar(
                select(OutboxEvent).where(
                    OutboxEvent.subject_id == submission_id,
                    OutboxEvent.topic == "scoring.submission",
                )
            )
            return job

    async def succeeded() -> bool:
        job = await scoring_job()
        return job is not None and job.status == JobStatus.succeeded

    with worker(stack, "worker.log", queues="reports") as log:
        async with relaying(stack.settings):
            await eventually(succeeded, timeout=30, what=lambda: log.read_text()[-3000:])
    job = await scoring_job()
    assert job is not None and job.attempts == 1 and job.error is None
    async with sessionmaker() as db:
        scores = list(
            await db.scalars(select(TaskScore).where(TaskScore.submission_id == submission_id))
        )
        checks = await db.scalar(
            select(func.count())
            .select_from(QualityCheck)
            .where(QualityCheck.submission_id == submission_id)
        )
    # The bench's three modules have no scorer of their own: their derived metrics score them.
    assert len(scores) == 3 and {(s.scorer_key, s.scorer_version) for s in scores} == {
        ("derived", "1")
    }
    assert all(s.n_mismatches == 0 for s in scores), [s.comparison for s in scores]
    assert checks
