"""The task protocol: every outbox task is `run(task, event_id, handler)`, one id a message.

0. The row's run lock (server.outbox.liveness): a session-level advisory lock on a database
   connection of its own, held until the outcome is committed. Held by another live run (a
   second message for the same row): nothing to do.
1. One transaction: claim the row (server.outbox.service.claim): running, attempts + 1. A row
   finished or gone: nothing to do.
2. One transaction: the handler (the domain's service call), then the row succeeded (or
   failed, if the handler says so with `Failed`): the service's writes commit with it or not
   at all.
3. The handler raised: a transient error (workers.errors) within TASK_MAX_RETRIES sets the row
   retrying, due again after a backoff; anything else fails it (the dead letter).

Celery acknowledges a message when its task starts and never retries it. A message lost with
Redis is published again by the relay once the row's due_at passes; a run whose worker died
lost its lock with its connection, and the relay publishes its row again within seconds. That
is the only way work comes back.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from server.core.config import Settings, get_settings
from server.core.models import utcnow
from server.outbox import liveness
from server.outbox import service as outbox
from server.outbox.models import OutboxEvent
from workers import runtime
from workers.app import TypedTask, task
from workers.errors import is_transient, retry_after

log = structlog.stdlib.get_logger(__name__)


@dataclass(frozen=True)
class Failed:
    """A handler's answer for work that cannot succeed (REDCap rejected the record, say): the
    row fails with this error, and the handler's own writes still commit."""

    error: str


# What a task does with its row's payload (ids only): where its result is, if anywhere.
Handler = Callable[[AsyncSession, Settings, dict[str, Any]], Awaitable[str | Failed | None]]
# A task that claims its row and records its outcome itself, in transactions of its own, to
# call out with none open (exports' upload, a reminder's send): steps 1 to 3 are its own, run
# under the row's run lock (step 0); its outcome's name.
Door = Callable[[async_sessionmaker[AsyncSession], Settings, uuid.UUID], Awaitable[str]]


def job_task() -> Callable[[Callable[[str], str]], TypedTask[[str], str]]:
    """A Celery task taking one outbox row's id; its queue is its topic's (outbox.topics)."""
    # The row is the result; Celery's result backend would only hold a copy.
    return task(ignore_result=True)


def backoff(settings: Settings, attempts: int, hint: float | None) -> float:
    """Seconds before a retry: 2, 4, 8, ... (REDCap's Retry-After if longer), capped."""
    wait = max(2.0 ** min(attempts, 30), hint or 0.0)
    return min(wait, float(settings.TASK_RETRY_BACKOFF_MAX))


async def record_failure(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    event_id: uuid.UUID,
    task_name: str,
    exc: BaseException,
    attempts: int | None,
) -> str:
    """Retry a transient error while the row has attempts left; fail anything else.
    attempts: the row's runs, this one included (None: read them from the row)."""
    error = outbox.safe_error(exc)
    now = utcnow()
    async with sessionmaker() as db, db.begin():
        if attempts is None:
            row = await db.get(OutboxEvent, event_id)
            attempts = row.attempts if row is not None else 0
        if is_transient(exc) and attempts <= settings.TASK_MAX_RETRIES:
            wait = backoff(settings, attempts, retry_after(exc))
            await outbox.retry(db, event_id, error=error, due_at=now + timedelta(seconds=wait))
            log.warning("task_retrying", task=task_name, event_id=str(event_id), error=error)
            return "retrying"
        await outbox.fail(db, event_id, error=error, now=now)
    log.error("task_failed", task=task_name, event_id=str(event_id), attempts=attempts, error=error)
    return "failed"


async def process(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    event_id: uuid.UUID,
    task_name: str,
    handler: Handler,
) -> str:
    """Steps 0 to 3 above; the outcome's name. Never raises for the handler's errors."""

    async def claim_and_run(
        sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, event_id: uuid.UUID
    ) -> str:
        return await _claim_and_run(
            sessionmaker, settings, event_id=event_id, task_name=task_name, handler=handler
        )

    return await locked(sessionmaker, settings, event_id=event_id, task_name=task_name,
                        door=claim_and_run)  # fmt: skip


async def locked(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    event_id: uuid.UUID,
    task_name: str,
    door: Door,
) -> str:
    """Step 0: the door runs while this run holds the row's run lock, or not at all."""
    async with liveness.run_lock(_bind(sessionmaker), event_id) as held:
        if not held:
            log.info("task_skipped", task=task_name, event_id=str(event_id), reason="running")
            return "skipped"
        return await door(sessionmaker, settings, event_id)


def _bind(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncEngine | AsyncConnection:
    bind = sessionmaker.kw["bind"]
    assert isinstance(bind, AsyncEngine | AsyncConnection)
    return bind


async def _claim_and_run(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    event_id: uuid.UUID,
    task_name: str,
    handler: Handler,
) -> str:
    async with sessionmaker() as db, db.begin():
        claimed = await outbox.claim(
            db, event_id, now=utcnow(), max_attempts=settings.TASK_MAX_RETRIES + 1
        )
    if isinstance(claimed, str):
        log.info("task_skipped", task=task_name, event_id=str(event_id), reason=claimed)
        return "skipped"
    try:
        async with sessionmaker() as db, db.begin():
            result = await handler(db, settings, claimed.payload)
            if isinstance(result, Failed):
                await outbox.fail(db, event_id, error=result.error, now=utcnow())
            else:
                await outbox.succeed(db, event_id, now=utcnow(), result_location=result)
    except Exception as exc:
        return await record_failure(
            sessionmaker,
            settings,
            event_id=event_id,
            task_name=task_name,
            exc=exc,
            attempts=claimed.attempts,
        )
    outcome = "failed" if isinstance(result, Failed) else "succeeded"
    log.info(f"task_{outcome}", task=task_name, event_id=str(event_id), attempts=claimed.attempts)
    return outcome


def run(task: TypedTask[[str], str], event_id: str, handler: Handler) -> str:
    """The body of every outbox task, on this worker process's loop and engine."""

    async def claim_and_run(
        sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, event_id: uuid.UUID
    ) -> str:
        return await _claim_and_run(
            sessionmaker, settings, event_id=event_id, task_name=task.name, handler=handler
        )

    return run_door(task, event_id, claim_and_run)


def run_door(task: TypedTask[[str], str], event_id: str, door: Door) -> str:
    """run() for a task that is its own door (see Door): the same id check, run lock and
    record of a run cut short by the soft time limit."""
    try:
        parsed = uuid.UUID(str(event_id))
    except ValueError:
        log.error("task_bad_event_id", task=task.name)
        return "skipped"
    settings = get_settings()
    sessionmaker = runtime.sessionmaker()
    try:
        return runtime.run(
            lambda: locked(sessionmaker, settings, event_id=parsed, task_name=task.name, door=door)
        )
    except SoftTimeLimitExceeded as exc:
        # Cut short outside the door's frames (inside the loop): recorded like a failure,
        # under the run lock again (else the relay may take the row for a dead run meanwhile).
        cut_short: BaseException = exc

        async def record() -> str:
            async with liveness.run_lock(_bind(sessionmaker), parsed) as held:
                if not held:
                    return "skipped"
                return await record_failure(
                    sessionmaker,
                    settings,
                    event_id=parsed,
                    task_name=task.name,
                    exc=cut_short,
                    attempts=None,
                )

        return runtime.run(record)
