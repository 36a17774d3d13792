"""The task protocol (workers.events) and the jobs API, in-process on the test's transaction.

Real Celery workers run the same protocol in tests/test_worker.py; here each step is checked
on its own: success and its no-op replay, dead letters and rerun, retries, the attempt budget.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.config import Settings
from server.core.models import utcnow
from server.jobs import service as jobs_service
from server.jobs.models import DeadLetter, Job, JobStatus
from server.outbox import service as outbox
from server.outbox.models import OutboxEvent
from server.redcap.errors import RedcapRejected, TransientRedcapError
from server.studies.models import Study, StudyRole
from server.submissions.models import Submission
from tests import factories
from tests import ingest_factories as ingest
from workers import relay_cycle
from workers.app import TASK_TIME_LIMIT_S
from workers.errors import TransientError, is_transient
from workers.events import Outcome, process_event, record_failure

TASK = "workers.tasks.archive.archive_submission"


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
    await outbox.add(
        db, [outbox.Event(topic, {"submission_id": str(submission.id)}, submission.id)]
    )
    event = await db.scalar(
        select(OutboxEvent).where(
            OutboxEvent.subject_id == submission.id, OutboxEvent.topic == topic
        )
    )
    assert event is not None
    return event


async def fresh(db: AsyncSession, model: Any, ident: uuid.UUID) -> Any:
    return await db.get(model, ident, populate_existing=True)


async def job_of(db: AsyncSession, event_id: uuid.UUID) -> Job:
    job = await db.scalar(
        select(Job).where(Job.outbox_event_id == event_id).execution_options(populate_existing=True)
    )
    assert job is not None
    return job


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


def handler_returning(value: str | None) -> Any:
    calls: list[dict[str, Any]] = []

    async def handler(db: AsyncSession, settings: Settings, payload: dict[str, Any]) -> str | None:
        calls.append(payload)
        return value

    handler.calls = calls  # type: ignore[attr-defined]
    return handler


async def assert_first_run_retrying(db: AsyncSession, event_id: uuid.UUID) -> None:
    """Its first run failed and it waits for a retry: not dead-lettered."""
    job = await job_of(db, event_id)
    assert (job.status, job.attempts) == (JobStatus.retrying, 1)
    assert await db.scalar(select(DeadLetter).where(DeadLetter.job_id == job.id)) is None


def handler_raising(exc: BaseException) -> Any:
    async def handler(db: AsyncSession, settings: Settings, payload: dict[str, Any]) -> str | None:
        raise exc

    return handler


async def test_success_completes_the_event_and_a_replay_is_a_no_op(
    db: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    event: OutboxEvent,
) -> None:
    handler = handler_returning("studies/x/archive.json")
    first = await process_event(
        sessions, settings, event_id=event.id, task_name=TASK, handler=handler, celery_task_id="t-1"
    )
    assert first.outcome is Outcome.succeeded
    assert handler.calls == [event.payload]
    job = await job_of(db, event.id)
    assert job.status is JobStatus.succeeded
    assert (job.attempts, job.celery_task_id, job.kind) == (1, "t-1", outbox.ARCHIVE_SUBMISSION)
    assert job.result_location == "studies/x/archive.json"
    assert job.started_at is not None and job.finished_at is not None
    # The job was made by the task (the relay had not run): its study comes from the submission.
    submission = await db.get(Submission, event.subject_id)
    assert submission is not None and job.study_id == submission.study_id
    row = await fresh(db, OutboxEvent, event.id)
    assert row.completed_at is not None and row.last_error is None

    again = await process_event(
        sessions, settings, event_id=event.id, task_name=TASK, handler=handler, celery_task_id="t-2"
    )
    assert again.outcome is Outcome.skipped and again.detail == "completed"
    assert len(handler.calls) == 1
    job = await job_of(db, event.id)
    assert (job.attempts, job.celery_task_id, job.status) == (1, "t-1", JobStatus.succeeded)


async def test_a_missing_event_is_skipped(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    result = await process_event(
        sessions, settings, event_id=uuid.uuid4(), task_name=TASK, handler=handler_returning(None)
    )
    assert result.outcome is Outcome.skipped and result.detail == "gone"


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

    result = await process_event(
        sessions, settings, event_id=event.id, task_name=TASK, handler=half_done
    )
    assert result.outcome is Outcome.dead_lettered
    assert await db.scalar(select(Study).where(Study.code == study_code)) is None


async def test_a_permanent_error_is_a_dead_letter_and_rerun_puts_it_back(
    db: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    event: OutboxEvent,
    client: AsyncClient,
) -> None:
    failed = await process_event(
        sessions,
        settings,
        event_id=event.id,
        task_name=TASK,
        handler=handler_raising(ValueError("no template for someone@example.org")),
    )
    assert failed.outcome is Outcome.dead_lettered
    job = await job_of(db, event.id)
    assert job.status is JobStatus.failed and job.finished_at is not None
    assert job.error == "ValueError: no template for [redacted]"
    row = await fresh(db, OutboxEvent, event.id)
    assert row.completed_at is not None  # the relay stops sending it
    dead = await db.scalar(select(DeadLetter).where(DeadLetter.job_id == job.id))
    assert dead is not None
    assert (dead.task_name, dead.attempts, dead.error) == (TASK, 1, job.error)
    assert dead.args == {
        "event_id": str(event.id),
        "topic": outbox.ARCHIVE_SUBMISSION,
        "payload": event.payload,
    }
    # Nothing due: the relay leaves it alone.
    assert (await outbox.backlog(db, now=utcnow())).pending == 0

    admin = await factories.create_user(db, is_admin=True)
    headers = await factories.auth_headers(db, settings, admin)
    listed = await client.get("/api/dead-letters", params={"rerun": "false"}, headers=headers)
    assert listed.status_code == 200
    assert [d["id"] for d in listed.json()] == [str(dead.id)]

    rerun = await client.post(f"/api/dead-letters/{dead.id}/rerun", headers=headers)
    assert rerun.status_code == 200, rerun.text
    assert rerun.json()["rerun_job_id"] == str(job.id) and rerun.json()["rerun_at"]
    row = await fresh(db, OutboxEvent, event.id)
    assert (row.completed_at, row.published_at, row.lease_until) == (None, None, None)
    job = await job_of(db, event.id)
    assert (job.status, job.attempts, job.error) == (JobStatus.queued, 0, None)
    state = await outbox.backlog(db, now=utcnow())
    assert (state.pending, state.unpublished) == (1, 1)

    twice = await client.post(f"/api/dead-letters/{dead.id}/rerun", headers=headers)
    assert twice.status_code == 409 and twice.json()["error_code"] == "already_rerun"
    missing = await client.post(f"/api/dead-letters/{uuid.uuid4()}/rerun", headers=headers)
    assert missing.status_code == 404

    # The relay publishes it again; this time the task succeeds.
    published: list[tuple[str, uuid.UUID]] = []

    async def publish(topic: str, event_id: uuid.UUID) -> None:
        published.append((topic, event_id))

    result = await relay_cycle.relay_once(
        db, publish, now=utcnow(), lease=timedelta(minutes=5), batch=10
    )
    assert result.published == 1 and published == [(outbox.ARCHIVE_SUBMISSION, event.id)]
    ok = await process_event(
        sessions, settings, event_id=event.id, task_name=TASK, handler=handler_returning("k")
    )
    assert ok.outcome is Outcome.succeeded
    assert (await job_of(db, event.id)).status is JobStatus.succeeded


async def test_a_transient_error_retries_until_the_retries_run_out(
    db: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    event: OutboxEvent,
) -> None:
    flaky = handler_raising(TransientError("REDCap answered 503", retry_after=30))
    before = utcnow()
    first = await process_event(
        sessions, settings, event_id=event.id, task_name=TASK, handler=flaky, retries=0
    )
    assert first.outcome is Outcome.retry and first.retry_after == 30
    job = await job_of(db, event.id)
    assert job.status is JobStatus.retrying
    assert job.error == "TransientError: REDCap answered 503"
    row = await fresh(db, OutboxEvent, event.id)
    assert row.completed_at is None and row.last_error == job.error
    # Held past the retry: the relay does not send a copy while the retry waits.
    assert row.lease_until > before + timedelta(seconds=30 + settings.OUTBOX_LEASE_SECONDS)

    runs = settings.TASK_MAX_RETRIES + 1
    for retries in range(1, runs):
        again = await process_event(
            sessions, settings, event_id=event.id, task_name=TASK, handler=flaky, retries=retries
        )
        assert again.outcome is (Outcome.retry if retries < runs - 1 else Outcome.dead_lettered)
    job = await job_of(db, event.id)
    assert (job.status, job.attempts) == (JobStatus.failed, runs)
    dead = await db.scalar(select(DeadLetter).where(DeadLetter.job_id == job.id))
    assert dead is not None and dead.attempts == runs


async def test_an_events_retries_are_its_own_not_its_messages(
    db: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    event: OutboxEvent,
) -> None:
    # It waited in a message whose first event used up the message's retries (REDCap down
    # for long): its own first failure is a retry, not a dead letter.
    flaky = handler_raising(TransientError("REDCap answered 503"))
    result = await process_event(
        sessions,
        settings,
        event_id=event.id,
        task_name=TASK,
        handler=flaky,
        retries=settings.TASK_MAX_RETRIES,
    )
    assert result.outcome is Outcome.retry
    await assert_first_run_retrying(db, event.id)


async def test_a_message_that_retried_thousands_of_times_still_retries_its_next_event(
    db: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    event: OutboxEvent,
) -> None:
    # A long message behind a long outage: its retry count is the sum of its events' retries,
    # unbounded (each event's budget is its own), and the wait stays the longest backoff.
    before = utcnow()
    result = await process_event(
        sessions,
        settings,
        event_id=event.id,
        task_name=TASK,
        handler=handler_raising(TransientError("REDCap answered 503")),
        retries=5000,
    )
    assert result.outcome is Outcome.retry
    row = await fresh(db, OutboxEvent, event.id)
    assert row.lease_until is not None
    assert row.lease_until <= utcnow() + timedelta(
        seconds=settings.TASK_RETRY_BACKOFF_MAX + TASK_TIME_LIMIT_S + settings.OUTBOX_LEASE_SECONDS
    )
    assert row.lease_until > before + timedelta(seconds=settings.TASK_RETRY_BACKOFF_MAX)


async def start_run(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    event: OutboxEvent,
    *,
    celery_task_id: str | None,
    hold_until: datetime,
) -> None:
    """A task's first step (Job running), committed, as a worker would take it."""
    async with sessions() as s, s.begin():
        started = await jobs_service.start(
            s,
            event_id=event.id,
            task_name=TASK,
            celery_task_id=celery_task_id,
            now=utcnow(),
            hold_until=hold_until,
            max_attempts=settings.TASK_MAX_RETRIES + 1,
        )
        assert isinstance(started, jobs_service.Started)


async def test_a_run_cut_short_late_in_a_long_message_retries_on_its_own_budget(
    db: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    event: OutboxEvent,
) -> None:
    # Its first run, in a message whose earlier events retried many times, hit the soft time
    # limit outside the handler (the worker records that without the run's own count).
    await start_run(sessions, settings, event, celery_task_id="t-1", hold_until=utcnow())
    result = await record_failure(
        sessions,
        settings,
        event_id=event.id,
        task_name=TASK,
        exc=SoftTimeLimitExceeded(),
        retries=settings.TASK_MAX_RETRIES * 3,
    )
    assert result.outcome is Outcome.retry
    await assert_first_run_retrying(db, event.id)


async def test_attempts_that_never_reported_back_use_up_the_budget(
    db: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    event: OutboxEvent,
) -> None:
    # A message whose every run killed its worker: started, never finished.
    for _ in range(settings.TASK_MAX_RETRIES + 1):
        await start_run(sessions, settings, event, celery_task_id=None, hold_until=utcnow())
    handler = handler_returning(None)
    result = await process_event(
        sessions, settings, event_id=event.id, task_name=TASK, handler=handler
    )
    assert result.outcome is Outcome.skipped and result.detail == "out of attempts"
    assert handler.calls == []
    job = await job_of(db, event.id)
    assert job.status is JobStatus.failed
    runs = settings.TASK_MAX_RETRIES + 1
    assert job.error == f"out of attempts after {runs} runs (the last did not report back)"
    assert await db.scalar(select(DeadLetter).where(DeadLetter.job_id == job.id)) is not None


async def test_a_stopped_run_hands_its_event_back_but_not_another_runs(
    db: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    event: OutboxEvent,
) -> None:
    async def start(celery_task_id: str) -> None:
        hold_until = utcnow() + timedelta(minutes=11)
        await start_run(
            sessions, settings, event, celery_task_id=celery_task_id, hold_until=hold_until
        )

    async def hand_back(celery_task_id: str) -> bool:
        async with sessions() as s, s.begin():
            return await jobs_service.interrupted(
                s, event_id=event.id, celery_task_id=celery_task_id, error="stopped", now=utcnow()
            )

    await start("first-run")
    await start("second-run")  # a copy published again took it over
    assert not await hand_back("first-run")  # the older run may not cut the newer one's lease
    row = await db.get(OutboxEvent, event.id, populate_existing=True)
    assert row is not None and row.lease_until is not None and row.lease_until > utcnow()

    assert await hand_back("second-run")
    job = await job_of(db, event.id)
    assert (job.status, job.error) == (JobStatus.retrying, "stopped")
    # Due for the relay at once, not 11 minutes later.
    recorder = _Recorder()
    async with sessions() as s:
        due = await relay_cycle.relay_once(
            s, recorder, now=utcnow(), lease=timedelta(minutes=5), batch=10
        )
        await s.commit()
    assert due.republished == 1 and recorder.sent == [event.id]


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[uuid.UUID] = []

    async def __call__(self, topic: str, event_id: uuid.UUID) -> None:
        self.sent.append(event_id)


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
    job_a = Job(kind="archive.submission", study_id=study_a.id, status=JobStatus.succeeded)
    job_b = Job(kind="redcap.sync_submission", study_id=study_b.id, status=JobStatus.failed)
    job_none = Job(kind="maintenance.cleanup")
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
    assert 119 < body["oldest_pending_age_seconds"] < 180

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
    result = await process_event(
        sessions,
        settings,
        event_id=event.id,
        task_name="workers.tasks.redcap.sync_submission",
        handler=_sync,
    )
    assert result.outcome is Outcome.succeeded
    job = await job_of(db, event.id)
    assert job.status is JobStatus.succeeded and job.study_id == submission.study_id
    # No REDCap connection for the study: recorded as skipped, with the reason, in the same
    # transaction that completed the job.
    state = await db.get(RedcapSyncState, submission.id, populate_existing=True)
    assert state is not None and state.status.value == "skipped"
