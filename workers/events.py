"""The task protocol for outbox events: every event task is `run_events` plus one service call.

A task receives outbox event ids, a list of one topic's events (the relay publishes them, and
publishes them again when a lease runs out, so the same id may arrive more than once). Events
already completed when their turn comes are skipped; each of the others, in order:

1. One transaction: lock the event row; if it is gone or completed, return at once. Otherwise
   mark its Job running (started_at, attempts + 1, celery_task_id) and extend the lease over
   the run, so the relay does not send it again meanwhile.
2. One transaction: the service call, then Job succeeded and event completed. The service's
   own writes commit with the completion or not at all.
3. On a transient error: Job retrying with the error, the lease extended over the retry's
   countdown, and Celery's autoretry schedules the retry (exponential backoff, full jitter).
   On any other error, or the last retry: a DeadLetter, Job failed, event completed.
   A transient error stops the message: its retry carries the event that failed and those
   after it.
"""

from __future__ import annotations

import enum
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import structlog
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.config import Settings, get_settings
from server.core.models import utcnow
from server.jobs import service as jobs
from workers import runtime
from workers.app import TASK_TIME_LIMIT_S, TypedTask, task
from workers.errors import TransientError, is_transient, retry_after

log = structlog.stdlib.get_logger(__name__)

# What a task does with its event's payload (ids only); returns where its result is, if any.
Handler = Callable[[AsyncSession, Settings, dict[str, Any]], Awaitable[str | None]]


class Outcome(enum.StrEnum):
    succeeded = "succeeded"
    skipped = "skipped"
    retry = "retry"
    dead_lettered = "dead_lettered"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    detail: str | None = None  # the skip reason, the result location, or the error
    retry_after: float | None = None


EventIds = str | list[str]


class BookkeepingRetry(TransientError):
    """The task's own bookkeeping failed transiently (the database, say): the message again,
    within `max_retries` (the message's retry count includes its events' retries)."""

    def __init__(self, message: str, *, max_retries: int) -> None:
        super().__init__(message)
        self.max_retries = max_retries


def _bookkeeping_budget(settings: Settings, events: int) -> int:
    """TASK_MAX_RETRIES of its own, on top of all its events' retries could have used."""
    return settings.TASK_MAX_RETRIES + max(1, events) * (settings.TASK_MAX_RETRIES + 1)


class RetryRest(TransientError):
    """A transient failure part-way through a message: the retry carries the events not done
    (the one that failed first), not the whole message again."""

    def __init__(self, result: Result, rest: list[uuid.UUID]) -> None:
        super().__init__(result.detail or "", retry_after=result.retry_after)
        self.rest = [str(event_id) for event_id in rest]


def _hold_until(settings: Settings, now: datetime, waiting_s: float = 0.0) -> datetime:
    # Long enough for the run (the hard time limit) plus one lease, after any wait first.
    return now + timedelta(seconds=waiting_s + TASK_TIME_LIMIT_S + settings.OUTBOX_LEASE_SECONDS)


def _wait_bound(settings: Settings, hint: float | None, retries: int) -> float:
    """The longest countdown Celery's backoff (with jitter) can pick for this retry."""
    # A message's retries are unbounded (EventTask); 2.0**1024 is past a float's range.
    return max(min(2.0 ** min(retries, 64), settings.TASK_RETRY_BACKOFF_MAX), hint or 0.0)


async def record_failure(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    event_id: uuid.UUID,
    task_name: str,
    exc: BaseException,
    retries: int,
    attempts: int | None = None,
) -> Result:
    """Retry a transient error while the event has retries left; anything else is a dead
    letter. `retries`: the message's (Celery's countdown grows with it); `attempts`: the
    event's own runs, this one included, where known: its budget is its own, not shared with
    the events before it in the same message."""
    error = jobs.safe_error(exc)
    now = utcnow()
    if attempts is None:
        # Not the message's retries: those count its other events' too.
        async with sessionmaker() as db:
            attempts = await jobs.attempts_of(db, event_id)
    used = attempts - 1 if attempts else 0
    if is_transient(exc) and used < settings.TASK_MAX_RETRIES:
        hint = retry_after(exc)
        # Celery picks the countdown (with jitter) after this; hold the event past its bound.
        waiting = _wait_bound(settings, hint, retries)
        async with sessionmaker() as db, db.begin():
            pending = await jobs.retrying(
                db,
                event_id=event_id,
                error=error,
                now=now,
                hold_until=_hold_until(settings, now, waiting),
            )
        if not pending:
            return Result(Outcome.skipped, "completed meanwhile")
        log.warning(
            "task_retrying", task=task_name, event_id=str(event_id), retries=retries, error=error
        )
        return Result(Outcome.retry, error, hint)
    async with sessionmaker() as db, db.begin():
        dead = await jobs.fail(db, event_id=event_id, task_name=task_name, error=error, now=now)
    if dead is None:
        return Result(Outcome.skipped, "completed meanwhile")
    log.error(
        "task_dead_lettered",
        task=task_name,
        event_id=str(event_id),
        dead_letter_id=str(dead.id),
        attempts=dead.attempts,
        error=error,
    )
    return Result(Outcome.dead_lettered, error)


async def process_event(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    event_id: uuid.UUID,
    task_name: str,
    handler: Handler,
    celery_task_id: str | None = None,
    retries: int = 0,
) -> Result:
    """Steps 1 to 3 above, on the given sessions. Never raises for the handler's errors."""
    now = utcnow()
    async with sessionmaker() as db, db.begin():
        started = await jobs.start(
            db,
            event_id=event_id,
            task_name=task_name,
            celery_task_id=celery_task_id,
            now=now,
            hold_until=_hold_until(settings, now),
            max_attempts=settings.TASK_MAX_RETRIES + 1,
        )
    if isinstance(started, jobs.Skipped):
        log.info("task_skipped", task=task_name, event_id=str(event_id), reason=started.reason)
        return Result(Outcome.skipped, started.reason)
    try:
        async with sessionmaker() as db, db.begin():
            location = await handler(db, settings, started.payload)
            completed = await jobs.succeed(
                db, event_id=event_id, now=utcnow(), result_location=location
            )
    except Exception as exc:
        return await record_failure(
            sessionmaker,
            settings,
            event_id=event_id,
            task_name=task_name,
            exc=exc,
            retries=retries,
            attempts=started.attempts,
        )
    if not completed:
        return Result(Outcome.skipped, "completed meanwhile")
    log.info("task_succeeded", task=task_name, event_id=str(event_id), attempts=started.attempts)
    return Result(Outcome.succeeded, location)


class EventTask(Task):  # type: ignore[misc]
    """Celery's retry, bounded by this deployment's settings (read at run time, not import)."""

    # Unbounded here, bounded per retry below: a message that carries its events on
    # (RetryRest) must not stop at Celery's default of 3, or the events behind a failing one
    # would sit out their leases.
    max_retries = None

    def retry(
        self,
        args: Any = None,
        kwargs: Any = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: Any = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Any:
        settings = get_settings()
        if countdown is not None:
            countdown = min(countdown, settings.TASK_RETRY_BACKOFF_MAX)
            hint = retry_after(exc) if exc is not None else None
            if hint is not None:
                countdown = max(countdown, min(hint, settings.TASK_RETRY_BACKOFF_MAX))
        if isinstance(exc, RetryRest):
            # Each event has its own budget (record_failure): the message retries until its
            # events are done or dead-lettered, however many of them there are.
            args = ([*exc.rest],)
            max_retries = None
        elif isinstance(exc, BookkeepingRetry):
            max_retries = exc.max_retries
        elif max_retries is None:
            max_retries = settings.TASK_MAX_RETRIES
        return super().retry(
            args, kwargs, exc, throw, eta, countdown, max_retries=max_retries, **options
        )


def event_task() -> Callable[[Callable[[EventIds], str]], TypedTask[[EventIds], str]]:
    """A task taking outbox event ids (a list, or one id as messages had it before); transient
    errors (only) retry with backoff.

    Its queue is its topic's (server.outbox.topics.ROUTES, in the app's task_routes).
    """
    return task(
        base=EventTask,
        autoretry_for=(TransientError,),
        retry_backoff=True,
        retry_backoff_max=600,  # and TASK_RETRY_BACKOFF_MAX, if lower (EventTask.retry)
        retry_jitter=True,
        acks_late=True,
        # The Job row is the result; Celery's result backend would only hold a copy.
        ignore_result=True,
    )


def _record_interrupted(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    event_id: uuid.UUID,
    task_name: str,
    exc: BaseException,
    retries: int,
) -> Result:
    return runtime.run(
        lambda: record_failure(
            sessionmaker,
            settings,
            event_id=event_id,
            task_name=task_name,
            exc=exc,
            retries=retries,
        )
    )


INTERRUPTED = "Stopped before it finished (its worker shut down or lost the broker); sent again."


def _hand_back(event_id: uuid.UUID, task_name: str, celery_task_id: str | None) -> runtime.Abandon:
    """If the process leaves mid-run, the relay need not wait out the lease: a message lost
    with the broker (or one the broker keeps unacknowledged for its visibility timeout) is
    published again as soon as the broker takes it."""

    async def hand_back(db: AsyncSession) -> None:
        if await jobs.interrupted(
            db, event_id=event_id, celery_task_id=celery_task_id, error=INTERRUPTED, now=utcnow()
        ):
            log.warning("task_interrupted", task=task_name, event_id=str(event_id))

    return hand_back


def _parse(task_name: str, event_ids: EventIds) -> list[uuid.UUID]:
    parsed: list[uuid.UUID] = []
    for raw in [event_ids] if isinstance(event_ids, str) else event_ids:
        try:
            parsed.append(uuid.UUID(str(raw)))
        except ValueError:
            log.error("task_bad_event_id", task=task_name)
    return parsed


async def _pending(
    sessionmaker: async_sessionmaker[AsyncSession], event_ids: list[uuid.UUID]
) -> list[uuid.UUID]:
    """Those of the events not completed (nor gone), in the given order: one look for a whole
    message, most of which a REDCap batch sent for another row may have settled."""
    async with sessionmaker() as db:
        open_ = set(await jobs.not_completed(db, event_ids))
    return [event_id for event_id in event_ids if event_id in open_]


def _run_one(
    task: TypedTask[[EventIds], str],
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    event_id: uuid.UUID,
    handler: Handler,
    retries: int,
) -> Result:
    request = task.request
    runtime.forget_abandon()
    runtime.on_abandon(_hand_back(event_id, task.name, request.id))
    try:
        return runtime.run(
            lambda: process_event(
                sessionmaker,
                settings,
                event_id=event_id,
                task_name=task.name,
                handler=handler,
                celery_task_id=request.id,
                retries=retries,
            )
        )
    except SoftTimeLimitExceeded as exc:
        # The time limit fired outside the handler's own frames (inside the loop): the run was
        # cancelled; record it like a failure inside it.
        return _record_interrupted(sessionmaker, settings, event_id, task.name, exc, retries)
    finally:
        runtime.forget_abandon()


def run_events(task: TypedTask[[EventIds], str], event_ids: EventIds, handler: Handler) -> str:
    """The body of every event task: the protocol, event after event of the message, on this
    worker process's loop and engine. Events completed before their turn are skipped (one
    look after each event that did work). A transient failure stops the message: the retry
    carries that event and the ones after it, and holds their leases over its wait."""
    settings = get_settings()
    retries = int(task.request.retries or 0)
    sessionmaker = runtime.sessionmaker()
    outcomes: Counter[str] = Counter()
    try:
        runtime.start_message()
        parsed = _parse(task.name, event_ids)
        remaining = parsed
        if len(parsed) > 1:
            remaining = runtime.run(partial(_pending, sessionmaker, parsed))
        if len(remaining) < len(parsed):
            outcomes[Outcome.skipped] += len(parsed) - len(remaining)
        while remaining:
            event_id, remaining = remaining[0], remaining[1:]
            result = _run_one(task, sessionmaker, settings, event_id, handler, retries)
            outcomes[result.outcome] += 1
            if result.outcome is Outcome.retry:
                if remaining:
                    waiting = _wait_bound(settings, result.retry_after, retries)
                    until = _hold_until(settings, utcnow(), waiting)
                    runtime.run(partial(_hold, sessionmaker, remaining, until, result.detail or ""))
                raise RetryRest(result, [event_id, *remaining])
            if result.outcome is not Outcome.skipped and remaining:
                remaining = runtime.run(partial(_pending, sessionmaker, remaining))
    except RetryRest:
        raise
    except Exception as exc:
        # The bookkeeping itself failed (the database is down, say). Retry while that is
        # transient; past that, the events' leases run out and the relay publishes them again.
        budget = _bookkeeping_budget(settings, 1 if isinstance(event_ids, str) else len(event_ids))
        if is_transient(exc) and retries < budget:
            raise BookkeepingRetry(jobs.safe_error(exc), max_retries=budget) from exc
        raise
    if isinstance(event_ids, str):
        # One event (a message from before messages carried lists): its outcome, as before.
        return next(iter(outcomes), Outcome.skipped.value)
    return " ".join(f"{k}={v}" for k, v in sorted(outcomes.items()))


async def _hold(
    sessionmaker: async_sessionmaker[AsyncSession],
    event_ids: list[uuid.UUID],
    until: datetime,
    error: str,
) -> None:
    async with sessionmaker() as db, db.begin():
        await jobs.hold(db, event_ids, until, error)
