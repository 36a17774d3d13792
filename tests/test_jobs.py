"""The task protocol (workers.protocol) and the jobs API, in-process on the test's transaction.

Real Celery workers run the same protocol in tests/test_worker.py; here each step is checked
on its own: success and its no-op replay, failure (the dead letter) and rerun, retries after a
backoff, the attempt budget, a run whose worker died. Times are passed in, never waited for.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from server.core.config import Settings
from server.core.models import utcnow
from server.outbox import backlog, liveness
from server.outbox import service as outbox
from server.outbox.models import JobStatus, OutboxEvent
from server.redcap.errors import RedcapRejected, TransientRedcapError
from server.studies.models import Study, StudyRole
from server.submissions.models import Submission
from tests import factories
from tests import ingest_factories as ingest
from workers import relay
from workers.errors import TransientError, is_transient
from workers.protocol import Failed, process, record_failure

TASK = "workers.tasks.archive.archive_submission"
LEASE = timedelta(minutes=5)


async def create_submission(db: AsyncSession, study: Study | None = None) -> Submission:
    study = study or await factories.create_study(db)
    participant = await factories.create_participant(db, await factories.create_site(db, study))
    battery = await ingest.create_battery(db, study, await ingest.standard_modules(db))
    session = await ingest.start_session(db, participant, battery)
    submission = Submission(
        client_submission_id=f"c-{uuid.uuid4().hex[:8]}",
        participant_id=participant.id,
        study_id=study.id,
        session_id=session.id,
        checksum="0" * 64,
        raw_payload=b"{}",
    )
    db.add(submission)
    await db.flush()
    return submission


async def add_event(db: AsyncSession, submission: Submission, topic: str) -> OutboxEvent:
    payload = {"submission_id": str(submission.id)}
    event = outbox.Event(topic, payload, submission.id, submission.study_id)
    await outbox.add(db, [event])
    row = await db.scalar(
        select(OutboxEvent).where(
            OutboxEvent.subject_id == submission.id, OutboxEvent.topic == topic
        )
    )
    assert row is not None
    return row


async def fresh(db: AsyncSession, event_id: uuid.UUID) -> OutboxEvent:
    row = await db.get(OutboxEvent, event_id, populate_existing=True)
    assert row is not None
    return row


class Recorder:
    """A relay's publish that keeps what it was given."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, uuid.UUID]] = []

    async def __call__(self, messages: Sequence[tuple[str, uuid.UUID]]) -> None:
        self.sent.extend(messages)


async def relay_at(db: AsyncSession, now: datetime) -> list[uuid.UUID]:
    """One relay cycle as of `now`: the ids it published."""
    recorder = Recorder()
    result = await relay.relay_once(db, recorder, now=now, lease=LEASE, batch=10)
    assert result.error is None
    return [event_id for _, event_id in recorder.sent]


@pytest.fixture
def sessions(db: AsyncSession) -> async_sessionmaker[AsyncSession]:
    """Sessions as a worker opens them, each commit a savepoint of the test's transaction."""
    return async_sessionmaker(
        bind=db.bind, expire_on_commit=False, join_transaction_mode="create_savepoint"
    )


@pytest.fixture
async def event(db: AsyncSession) -> AsyncIterator[OutboxEvent]:
    submission = await create_submission(db)
    yield await add_event(db, submission, outbox.ARCHIVE_SUBMISSION)


def handler_returning(value: str | Failed | None) -> Any:
    calls: list[dict[str, Any]] = []

    async def handler(db: AsyncSession, settings: Settings, payload: dict[str, Any]) -> Any:
        calls.append(payload)
        return value

    handler.calls = calls  # type: ignore[attr-defined]
    return handler


def handler_raising(exc: BaseException) -> Any:
    async def handler(db: AsyncSession, settings: Settings, payload: dict[str, Any]) -> None:
        raise exc

    return handler


async def run(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    event_id: uuid.UUID,
    handler: Any,
) -> str:
    return await process(sessions, settings, event_id=event_id, task_name=TASK, handler=handler)


async def test_success_finishes_the_row_and_a_replay_is_a_no_op(
    db: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    event: OutboxEvent,
) -> None:
    handler = handler_returning("studies/x/archive.json")
    assert await run(sessions, settings, event.id, handler) == "succeeded"
    assert handler.calls == [event.payload]
    row = await fresh(db, event.id)
    assert (row.status, row.attempts, row.progress) == (JobStatus.succeeded, 1, 100)
    assert row.result_location == "studies/x/archive.json" and row.error is None
    assert row.started_at is not None and row.finished_at is not None

    # A second message for the same row (published again, say): nothing runs.
    assert await run(sessions, settings, event.id, handler) == "skipped"
    assert len(handler.calls) == 1
    assert (await fresh(db, event.id)).attempts == 1
    assert await relay_at(db, utcnow() + LEASE * 10) == []


async def test_a_missing_row_is_skipped(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    assert await run(sessions, settings, uuid.uuid4(), handler_returning(None)) == "skipped"


async def test_the_services_writes_roll_back_with_a_failure(
    db: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    event: OutboxEvent,
) -> None:
    study_code = f"ROLLBACK{uuid.uuid4().hex[:6]}"

    async def half_done(db: AsyncSession, settings: Settings, payload: dict[str, Any]) -> str:
        db.add(Study(code=study_code, name="written, then failed", description=""))
        await db.flush()
        raise ValueError("failed after writing")

    assert await run(sessions, settings, event.id, half_done) == "failed"
    assert await db.scalar(select(Study).where(Study.code == study_code)) is None


async def test_a_handler_that_answers_failed_fails_the_row_and_keeps_its_writes(
    db: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    event: OutboxEvent,
) -> None:
    study_code = f"KEPT{uuid.uuid4().hex[:6]}"

    async def rejected(db: AsyncSession, settings: Settings, payload: dict[str, Any]) -> Failed:
        db.add(Study(code=study_code, name="the outcome, written", description=""))
        await db.flush()
        return Failed("REDCap refused the record")

    assert await run(sessions, settings, event.id, rejected) == "failed"
    row = await fresh(db, event.id)
    assert (row.status, row.error) == (JobStatus.failed, "REDCap refused the record")
    assert await db.scalar(select(Study).where(Study.code == study_code)) is not None


async def test_a_permanent_error_is_a_dead_letter_and_rerun_puts_it_back(
    db: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    event: OutboxEvent,
    client: AsyncClient,
) -> None:
    failing = handler_raising(ValueError("no template for someone@example.org"))
    assert await run(sessions, settings, event.id, failing) == "failed"
    row = await fresh(db, event.id)
    assert row.status is JobStatus.failed and row.finished_at is not None
    assert row.error == "ValueError: no template for [redacted]"
    # Finished: the relay leaves it alone.
    assert (await backlog.backlog(db, now=utcnow())).pending == 0
    assert await relay_at(db, utcnow() + LEASE * 10) == []

    admin = await factories.create_user(db, is_admin=True)
    headers = await factories.auth_headers(db, settings, admin)
    listed = await client.get("/api/dead-letters", params={"rerun": "false"}, headers=headers)
    assert listed.status_code == 200
    [dead] = listed.json()
    assert (dead["id"], dead["topic"], dead["attempts"]) == (str(event.id), event.topic, 1)
    assert dead["payload"] == event.payload and dead["error"] == row.error

    rerun = await client.post(f"/api/dead-letters/{event.id}/rerun", headers=headers)
    assert rerun.status_code == 200, rerun.text
    assert rerun.json()["status"] == "queued" and rerun.json()["rerun_at"]
    row = await fresh(db, event.id)
    assert (row.status, row.attempts, row.error, row.finished_at) == (
        JobStatus.queued, 0, None, None
    )  # fmt: skip
    assert (await backlog.backlog(db, now=utcnow())).pending == 1

    twice = await client.post(f"/api/dead-letters/{event.id}/rerun", headers=headers)
    assert twice.status_code == 409 and twice.json()["error_code"] == "not_failed"
    missing = await client.post(f"/api/dead-letters/{uuid.uuid4()}/rerun", headers=headers)
    assert missing.status_code == 404

    # The relay publishes it again; this time the task succeeds.
    assert await relay_at(db, utcnow()) == [event.id]
    assert await run(sessions, settings, event.id, handler_returning("k")) == "succeeded"
    assert (await fresh(db, event.id)).status is JobStatus.succeeded


async def test_a_transient_error_comes_back_after_its_backoff_until_the_attempts_run_out(
    db: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    event: OutboxEvent,
) -> None:
    flaky = handler_raising(TransientError("REDCap answered 503", retry_after=30))
    before = utcnow()
    assert await run(sessions, settings, event.id, flaky) == "retrying"
    row = await fresh(db, event.id)
    assert (row.status, row.attempts) == (JobStatus.retrying, 1)
    assert row.error == "TransientError: REDCap answered 503"
    # Due again after REDCap's Retry-After (longer than the first backoff), not before.
    assert row.due_at >= before + timedelta(seconds=30)
    assert await relay_at(db, row.due_at - timedelta(seconds=1)) == []
    assert await relay_at(db, row.due_at) == [event.id]

    runs = settings.TASK_MAX_RETRIES + 1
    for attempt in range(2, runs + 1):
        # Each retry as the relay would publish it, once due.
        await relay_at(db, (await fresh(db, event.id)).due_at)
        outcome = await run(sessions, settings, event.id, flaky)
        assert outcome == ("retrying" if attempt < runs else "failed")
    row = await fresh(db, event.id)
    assert (row.status, row.attempts) == (JobStatus.failed, runs)


async def test_the_backoff_doubles_up_to_its_cap(settings: Settings) -> None:
    from workers.protocol import backoff

    assert [backoff(settings, n, None) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert backoff(settings, 5000, None) == settings.TASK_RETRY_BACKOFF_MAX
    assert backoff(settings, 1, 30.0) == 30.0


async def claimed_by_a_dead_run(
    sessions: async_sessionmaker[AsyncSession], event: OutboxEvent, settings: Settings
) -> None:
    """A run that claimed the row and never reported back, holding no run lock: its worker
    died (and its lock went with its database connection)."""
    async with sessions() as s, s.begin():
        claimed = await outbox.claim(
            s, event.id, now=utcnow(), max_attempts=settings.TASK_MAX_RETRIES + 1
        )
        assert isinstance(claimed, outbox.Claimed)


async def test_a_run_whose_worker_died_is_published_again_at_once_and_runs_once(
    db: AsyncSession,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    event: OutboxEvent,
) -> None:
    await claimed_by_a_dead_run(sessions, event, settings)
    handler = handler_returning(None)
    # While a live run holds the row's lock (a worker's connection of its own), the relay
    # leaves the row alone however late it is, and a copy of the message runs nothing.
    async with liveness.run_lock(engine, event.id) as held:
        assert held
        assert await relay_at(db, utcnow() + LEASE * 10) == []
        assert await run(sessions, settings, event.id, handler) == "skipped"
        assert (await fresh(db, event.id)).status is JobStatus.running
    # Its lock free, the run is over: the relay's next cycle publishes the row again,
    # queued (no lease to wait for), and the next run takes it over, once.
    assert await relay_at(db, utcnow()) == [event.id]
    row = await fresh(db, event.id)
    assert (row.status, row.error) == (JobStatus.queued, outbox.RUN_LOST)
    assert await relay_at(db, utcnow()) == []  # published: due again only a lease later
    assert await run(sessions, settings, event.id, handler) == "succeeded"
    row = await fresh(db, event.id)
    assert (row.status, row.attempts) == (JobStatus.succeeded, 2)
    assert len(handler.calls) == 1


async def test_a_live_runs_lock_is_given_back_when_it_ends(
    engine: AsyncEngine, event: OutboxEvent
) -> None:
    async with (
        liveness.run_lock(engine, event.id) as first,
        liveness.run_lock(engine, event.id) as second,
    ):
        assert (first, second) == (True, False)
    async with liveness.run_lock(engine, event.id) as again:
        assert again


async def test_a_run_cut_short_by_the_time_limit_retries_on_the_rows_budget(
    db: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    event: OutboxEvent,
) -> None:
    await claimed_by_a_dead_run(sessions, event, settings)
    outcome = await record_failure(
        sessions, settings, event_id=event.id, task_name=TASK, exc=SoftTimeLimitExceeded(),
        attempts=None,
    )  # fmt: skip
    assert outcome == "retrying"
    assert (await fresh(db, event.id)).status is JobStatus.retrying


async def test_attempts_that_never_reported_back_use_up_the_budget(
    db: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    event: OutboxEvent,
) -> None:
    # Work whose every run killed its worker: started, never finished.
    runs = settings.TASK_MAX_RETRIES + 1
    for _ in range(runs):
        await claimed_by_a_dead_run(sessions, event, settings)
    handler = handler_returning(None)
    assert await run(sessions, settings, event.id, handler) == "skipped"
    assert handler.calls == []
    row = await fresh(db, event.id)
    assert (row.status, row.error) == (JobStatus.failed, f"out of attempts after {runs} runs")


def test_transient_errors() -> None:
    assert is_transient(TransientError("later"))
    assert is_transient(ConnectionRefusedError())
    assert not is_transient(ValueError("bad payload"))
    assert not is_transient(KeyError("submission_id"))

    # The REDCap domain's own transient error counts too (it cannot import workers).
    assert is_transient(TransientRedcapError("rate limited", retry_after=30))
    assert not is_transient(RedcapRejected("The token is not valid"))


# --- the API ----------------------------------------------------------------------------


async def test_jobs_api_shows_staff_only_their_studies(
    db: AsyncSession, settings: Settings, client: AsyncClient
) -> None:
    study_a = await factories.create_study(db)
    study_b = await factories.create_study(db)
    job_a = OutboxEvent(
        topic="archive.submission", payload={}, study_id=study_a.id, status=JobStatus.succeeded
    )
    job_b = OutboxEvent(
        topic="redcap.sync_submission", payload={}, study_id=study_b.id, status=JobStatus.failed
    )
    job_none = OutboxEvent(topic="maintenance.cleanup", payload={})
    db.add_all([job_a, job_b, job_none])
    await db.flush()
    viewer = await factories.create_user(db)
    await factories.add_member(db, study_a, viewer, StudyRole.viewer)
    staff = await factories.auth_headers(db, settings, viewer)
    admin = await factories.auth_headers(
        db, settings, await factories.create_user(db, is_admin=True)
    )

    mine = await client.get("/api/jobs", headers=staff)
    assert mine.status_code == 200
    assert [j["id"] for j in mine.json()] == [str(job_a.id)]
    assert (await client.get(f"/api/jobs/{job_a.id}", headers=staff)).json()[
        "status"
    ] == "succeeded"
    for other in (job_b.id, job_none.id, uuid.uuid4()):
        response = await client.get(f"/api/jobs/{other}", headers=staff)
        assert response.status_code == 404 and response.json()["error_code"] == "not_found"
    assert (
        await client.get("/api/jobs", params={"study_id": str(study_b.id)}, headers=staff)
    ).status_code == 404

    every = {j["id"] for j in (await client.get("/api/jobs", headers=admin)).json()}
    assert {str(job_a.id), str(job_b.id), str(job_none.id)} <= every
    failed = (await client.get("/api/jobs", params={"status": "failed"}, headers=admin)).json()
    assert str(job_b.id) in {j["id"] for j in failed}
    assert all(j["status"] == "failed" for j in failed)
    kind = (
        await client.get("/api/jobs", params={"kind": "maintenance.cleanup"}, headers=admin)
    ).json()
    assert [j["id"] for j in kind] == [str(job_none.id)]
    assert (await client.get(f"/api/jobs/{job_none.id}", headers=admin)).status_code == 200

    # Administrators only.
    assert (await client.get("/api/dead-letters", headers=staff)).status_code == 403
    assert (
        await client.post(f"/api/dead-letters/{uuid.uuid4()}/rerun", headers=staff)
    ).status_code == 403
    assert (await client.get("/api/jobs/backlog", headers=staff)).status_code == 403
    assert (await client.get("/api/jobs")).status_code == 401


async def test_backlog_view(db: AsyncSession, settings: Settings, client: AsyncClient) -> None:
    submission = await create_submission(db)
    archive = await add_event(db, submission, outbox.ARCHIVE_SUBMISSION)
    await add_event(db, submission, outbox.REDCAP_SYNC_SUBMISSION)
    archive.published_at = utcnow()
    archive.created_at = utcnow() - timedelta(minutes=2)
    await db.flush()
    admin = await factories.auth_headers(
        db, settings, await factories.create_user(db, is_admin=True)
    )

    response = await client.get("/api/jobs/backlog", headers=admin)
    assert response.status_code == 200
    body = response.json()
    assert (body["pending"], body["unpublished"]) == (2, 1)
    assert body["by_topic"] == {"archive.submission": 1, "redcap.sync_submission": 1}
    assert body["oldest_pending_age_seconds"] >= 120

    # Readiness reports the backlog too, through the app's own engine (committed rows only,
    # so not this test's), and stays ready whatever it is.
    ready = await client.get("/api/health/ready")
    assert ready.status_code == 200
    assert set(ready.json()["outbox_backlog"]) == {"pending", "oldest_pending_age_seconds"}


async def test_the_redcap_task_runs_the_redcap_service(
    db: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    # Its service is the REDCap domain's (server.redcap.sync); this checks the two fit.
    pytest.importorskip("server.redcap.sync")
    from server.redcap.models import RedcapSyncState
    from workers.tasks.redcap import _sync

    submission = await create_submission(db)
    event = await add_event(db, submission, outbox.REDCAP_SYNC_SUBMISSION)
    handler = _sync
    assert await run(sessions, settings, event.id, handler) == "succeeded"
    row = await fresh(db, event.id)
    assert row.status is JobStatus.succeeded
    # No REDCap connection for the study: recorded as skipped, with the reason, in the same
    # transaction that completed the job.
    state = await db.get(RedcapSyncState, submission.id, populate_existing=True)
    assert state is not None and state.status.value == "skipped"
