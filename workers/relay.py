"""The outbox relay: publishes each due outbox row's id to its topic's task.

    python -m server relay

A row is due while it is not finished, not running, and its due_at has passed: new rows at
once, a retry after its backoff, and a row whose message no run took within a lease (Redis
lost it) again; publishing pushes due_at one lease on. Every LIVENESS_EVERY_S the relay also
looks for running rows whose run lock is free (server.outbox.liveness: their worker died) and
publishes them again, queued. Broker down: nothing changes, the rows wait, the relay backs off
and tries again. Several relays may run: each cycle's rows are taken FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.core.db import create_engine, create_sessionmaker
from server.core.models import utcnow
from server.outbox import backlog, liveness, topics
from server.outbox import service as outbox
from workers.publisher import CeleryPublisher

log = structlog.get_logger(__name__)

# publish([(topic, id), ...]): all of them sent, or raise (some may have gone: harmless).
Publish = Callable[[Sequence[tuple[str, uuid.UUID]]], Awaitable[None]]
MAX_BACKOFF_S = 30.0
BACKLOG_LOG_EVERY_S = 60.0
# How often running rows are checked for a dead run: the wait after a worker is killed.
LIVENESS_EVERY_S = 5.0


@dataclass
class RelayResult:
    published: int = 0
    failed: int = 0  # rows of a topic no task handles
    error: str | None = None  # why publishing stopped (the broker is down, say)


async def relay_once(
    db: AsyncSession,
    publish: Publish,
    *,
    now: datetime,
    lease: timedelta,
    batch: int,
    orphans: bool = True,
) -> RelayResult:
    """Publish up to `batch` due rows, and (orphans) the running rows whose run died; the
    caller commits. A failed publish changes nothing."""
    result = RelayResult()
    routed: list[tuple[str, uuid.UUID]] = []
    rows = await outbox.due(db, now=now, limit=batch)
    if orphans:
        rows += await liveness.orphaned(db, limit=batch)
    for event_id, topic in rows:
        if topic in topics.ROUTES:
            routed.append((topic, event_id))
        else:
            # Not a broker problem, and it would come back every cycle: failed, for an admin
            # to re-run once a task handles the topic.
            await outbox.fail(db, event_id, error=f"no task handles topic {topic!r}", now=now)
            result.failed += 1
    if routed:
        try:
            await publish(routed)
        except Exception as exc:
            result.error = outbox.safe_error(exc)
            return result
        await outbox.published(db, [event_id for _, event_id in routed], now=now, lease=lease)
    result.published = len(routed)
    return result


async def _wait(stop_event: asyncio.Event, seconds: float) -> None:
    with suppress(TimeoutError):
        await asyncio.wait_for(stop_event.wait(), timeout=seconds)


async def run_relay(
    settings: Settings,
    stop_event: asyncio.Event,
    *,
    publish: Publish | None = None,
    on_cycle: Callable[[RelayResult], None] | None = None,
) -> None:
    """Relay until stop_event is set: every RELAY_INTERVAL_SECONDS, four times as often while
    full batches go out, backing off (up to 30 s) while publishing fails. publish defaults to
    Celery on this deployment's broker; on_cycle sees every cycle's result."""
    close: Callable[[], None] | None = None
    if publish is None:
        publisher = CeleryPublisher.from_settings(settings)
        publish, close = publisher.publish, publisher.close
    engine = create_engine(settings.model_copy(update={"DATABASE_POOL_SIZE": 2}))
    sessionmaker = create_sessionmaker(engine)
    interval, batch = settings.RELAY_INTERVAL_SECONDS, settings.RELAY_BATCH_SIZE
    lease = timedelta(seconds=settings.OUTBOX_LEASE_SECONDS)
    delay, failing_since, last_backlog_log, last_liveness = interval, None, 0.0, 0.0
    log.info("relay_started", interval_s=interval, lease_s=lease.total_seconds(), batch=batch)
    try:
        while not stop_event.is_set():
            orphans = time.monotonic() - last_liveness >= LIVENESS_EVERY_S
            if orphans:
                last_liveness = time.monotonic()
            try:
                async with sessionmaker() as db:
                    result = await relay_once(
                        db, publish, now=utcnow(), lease=lease, batch=batch, orphans=orphans
                    )
                    await db.commit()
            except Exception as exc:  # the database: the rows are safe in it, try again later
                result = RelayResult(error=outbox.safe_error(exc))
            if on_cycle is not None:
                on_cycle(result)
            if result.published:
                log.info("relay_published", published=result.published)
            if result.error is not None:
                if failing_since is None:
                    failing_since, delay = time.monotonic(), interval
                else:
                    delay = min(max(delay, interval) * 2, MAX_BACKOFF_S)
                log.warning("relay_publish_failed", error=result.error, retry_in_s=delay)
            else:
                if failing_since is not None:
                    log.info("relay_recovered", after_s=round(time.monotonic() - failing_since, 1))
                    failing_since = None
                # A full batch: more may be due, go again after a quarter interval. That caps
                # the relay at 4 batches an interval (2,000 rows/s by default, twice ingest's
                # peak), and rows a REDCap sender settles meanwhile are never published.
                full = result.published + result.failed >= batch
                delay = interval / 4 if full else interval
            if time.monotonic() - last_backlog_log >= BACKLOG_LOG_EVERY_S:
                last_backlog_log = time.monotonic()
                with suppress(Exception):
                    async with sessionmaker() as db:
                        state = await backlog.backlog(db, now=utcnow())
                    log.info("outbox_backlog", **state.summary(), by_topic=state.by_topic)
            await _wait(stop_event, delay)
    finally:
        if close is not None:
            await asyncio.to_thread(close)
        await engine.dispose()
        log.info("relay_stopped")
