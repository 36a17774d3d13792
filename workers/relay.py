"""The outbox relay: publishes committed outbox rows to the broker, and again when a lease ends.

    python -m server relay

A row is due while it is not completed and either never published or its lease has run out
(the message was lost with a Redis restart, or the worker running it died). The relay
publishes the event id to the topic's task, records the publish and a lease, and makes sure
the event has its Job. A task completes the row when it is done (workers.events). Broker
down: nothing changes, the rows wait, the relay backs off and tries again on its own.

Several relays may run: on PostgreSQL each batch is taken with FOR UPDATE SKIP LOCKED.

A broker that comes back as a new server (Redis's run_id changed: restarted, and empty unless
it persists) has lost the messages it held; the relay sees the change on its next cycle and
sends the rows still waiting for a worker again at once (resend_waiting), not a lease later.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.config import Settings
from server.core.db import create_engine, create_sessionmaker
from server.core.models import utcnow
from server.jobs import service as jobs_service
from server.outbox import service as outbox
from workers.publisher import CeleryPublisher
from workers.relay_cycle import (
    BatchPublisher,
    Publish,
    RelayResult,
    held_topics,
    relay_once,
    resend_waiting,
)

log = structlog.get_logger(__name__)

MAX_BACKOFF_S = 30.0
BACKLOG_LOG_EVERY_S = 60.0


async def _watch_broker(
    epoch_of: Callable[[], Awaitable[str | None]],
    sessionmaker: async_sessionmaker[AsyncSession],
    last: str | None,
) -> str | None:
    """The broker's epoch now; on a change, resend_waiting first. Raises where the broker or the
    database does not answer, and the caller keeps `last`: the change is seen when both do.

    The cycle that raised publishes nothing: the broker may come back between the read and the
    publish, and rows sent to a new server before the relay knew of it would be sent again by
    the next cycle's resend_waiting (copies in the queue, each a task run for nothing)."""
    epoch = await epoch_of()
    if last is not None and epoch is not None and epoch != last:
        async with sessionmaker() as db:
            resent = await resend_waiting(db, now=utcnow())
            await db.commit()
        log.warning("broker_restarted", resent=resent)
    return epoch if epoch is not None else last


async def _wait(stop_event: asyncio.Event, seconds: float) -> None:
    with suppress(TimeoutError):
        await asyncio.wait_for(stop_event.wait(), timeout=seconds)


async def run_relay(
    settings: Settings,
    stop_event: asyncio.Event,
    *,
    publish: Publish | BatchPublisher | None = None,
    on_cycle: Callable[[RelayResult], None] | None = None,
) -> None:
    """Relay until stop_event is set: every RELAY_INTERVAL_SECONDS, at once while a full batch
    went out, and backing off (up to 30 s) while publishing fails.

    publish defaults to Celery on this deployment's broker; on_cycle sees every cycle's result.
    """
    close: Callable[[], None] | None = None
    if publish is None:
        publisher = CeleryPublisher.from_settings(settings)
        publish, close = publisher, publisher.close
    engine = create_engine(settings.model_copy(update={"DATABASE_POOL_SIZE": 2}))
    sessionmaker = create_sessionmaker(engine)
    interval = settings.RELAY_INTERVAL_SECONDS
    lease = timedelta(seconds=settings.OUTBOX_LEASE_SECONDS)
    batch = settings.RELAY_BATCH_SIZE
    delay = interval
    failing_since: float | None = None
    last_backlog_log = -math.inf
    epoch_of = getattr(publish, "broker_epoch", None)
    epoch: str | None = None
    held: frozenset[str] = frozenset()
    log.info("relay_started", interval_s=interval, lease_s=lease.total_seconds(), batch=batch)
    try:
        while not stop_event.is_set():
            try:
                if epoch_of is not None:
                    epoch = await _watch_broker(epoch_of, sessionmaker, epoch)
                now_held = await held_topics(publish, settings.RELAY_MAX_QUEUED_MESSAGES)
                if now_held != held:
                    log.info("relay_holding", topics=sorted(now_held))
                    held = now_held
                async with sessionmaker() as db:
                    result = await relay_once(
                        db, publish, now=utcnow(), lease=lease, batch=batch, held=held
                    )
                    await db.commit()
            except Exception as exc:
                # The broker or the database: the rows are safe in it, try again later.
                result = RelayResult(error=jobs_service.safe_error(exc))
            if on_cycle is not None:
                on_cycle(result)
            if result.published:
                log.info(
                    "relay_published",
                    published=result.published,
                    republished=result.republished,
                    jobs_created=result.jobs_created,
                )
            if result.error is not None:
                if failing_since is None:
                    failing_since = time.monotonic()
                    delay = interval
                else:
                    delay = min(max(delay, interval) * 2, MAX_BACKOFF_S)
                log.warning(
                    "relay_publish_failed",
                    error=result.error,
                    failing_for_s=round(time.monotonic() - failing_since, 1),
                    retry_in_s=delay,
                )
            else:
                if failing_since is not None:
                    log.info("relay_recovered", after_s=round(time.monotonic() - failing_since, 1))
                    failing_since = None
                # A full batch: more may be due, go again at once.
                delay = 0.0 if result.published + result.dead_lettered >= batch else interval
            if time.monotonic() - last_backlog_log >= BACKLOG_LOG_EVERY_S:
                last_backlog_log = time.monotonic()
                with suppress(Exception):
                    async with sessionmaker() as db:
                        state = await outbox.backlog(db, now=utcnow())
                    log.info(
                        "outbox_backlog",
                        pending=state.pending,
                        unpublished=state.unpublished,
                        oldest_pending_age_s=state.oldest_pending_age_seconds,
                        by_topic=state.by_topic,
                    )
            await _wait(stop_event, delay)
    finally:
        if close is not None:
            await asyncio.to_thread(close)
        await engine.dispose()
        log.info("relay_stopped")
