"""Exports: outbox topics `exports.build` (exports queue) and `exports.redcap_push` (redcap
queue, beside the sync's senders).

A door of its own (protocol.run_door), not protocol.run's one-transaction handler: the build
holds no transaction while it uploads the zip (server.exports.build opens and closes its
own), so this door claims the row, calls the build, then marks the row, each step in a
transaction of its own. A worker killed
mid-build leaves the row running and frees its run lock (server.outbox.liveness, as in
protocol.process): the relay publishes it again within seconds and the build starts over;
nothing is offered until the zip is whole in storage.
"""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.archive.storage import storage_from_settings
from server.core.config import Settings
from server.core.models import utcnow
from server.exports import build, redcap_push
from server.exports.plan import ExportGone, SelectionChanged
from server.outbox import service as outbox
from workers import protocol

log = structlog.stdlib.get_logger(__name__)


async def _claim_and_build(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, event_id: uuid.UUID
) -> str:
    async with sessionmaker() as db, db.begin():
        claimed = await outbox.claim(
            db, event_id, now=utcnow(), max_attempts=settings.TASK_MAX_RETRIES + 1
        )
    if isinstance(claimed, str):
        log.info("task_skipped", task=build_export.name, event_id=str(event_id), reason=claimed)
        return "skipped"
    try:
        key: str | None = await build.build(
            sessionmaker,
            storage_from_settings(settings),
            uuid.UUID(claimed.payload["export_id"]),
            pause_s=settings.EXPORT_TEST_PAUSE_SECONDS,
        )
    except ExportGone:
        key = None
    except SelectionChanged as exc:
        async with sessionmaker() as db, db.begin():
            await outbox.fail(db, event_id, error=outbox.safe_error(exc), now=utcnow())
        return "failed"
    except Exception as exc:
        return await protocol.record_failure(
            sessionmaker, settings, event_id=event_id, task_name=build_export.name, exc=exc,
            attempts=claimed.attempts,
        )  # fmt: skip
    async with sessionmaker() as db, db.begin():
        await outbox.succeed(db, event_id, now=utcnow(), result_location=key)
    log.info("task_succeeded", task=build_export.name, event_id=str(event_id),
             attempts=claimed.attempts)  # fmt: skip
    return "succeeded"


@protocol.job_task()
def build_export(event_id: str) -> str:
    """Build one export's zip and publish it to the archive's storage."""
    return protocol.run_door(build_export, event_id, _claim_and_build)


async def _claim_and_push(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, event_id: uuid.UUID
) -> str:
    """A REDCap push (server.exports.redcap_push): the set chosen once, then the connections'
    senders driven for a time budget; with records left after progress, the row is due again
    at once (its next run goes on), never a second choice of the set."""
    async with sessionmaker() as db, db.begin():
        claimed = await outbox.claim(
            db, event_id, now=utcnow(), max_attempts=settings.TASK_MAX_RETRIES + 1
        )
    if isinstance(claimed, str):
        log.info("task_skipped", task=push_to_redcap.name, event_id=str(event_id), reason=claimed)
        return "skipped"
    push_id = uuid.UUID(claimed.payload["push_id"])
    try:
        async with sessionmaker() as db, db.begin():
            await redcap_push.choose(db, push_id)
        async with sessionmaker() as db:
            done = await redcap_push.drive(
                db, settings, push_id, budget_s=settings.OUTBOX_LEASE_SECONDS / 3
            )
        async with sessionmaker() as db, db.begin():
            if done:
                await redcap_push.finish(db, push_id)
                await outbox.succeed(db, event_id, now=utcnow())
            else:
                await outbox.resume(db, event_id, due_at=utcnow())
    except redcap_push.PushGone:
        async with sessionmaker() as db, db.begin():
            await outbox.succeed(db, event_id, now=utcnow())
        return "succeeded"
    except Exception as exc:
        return await protocol.record_failure(
            sessionmaker, settings, event_id=event_id, task_name=push_to_redcap.name, exc=exc,
            attempts=claimed.attempts,
        )  # fmt: skip
    outcome = "succeeded" if done else "continuing"
    log.info(f"task_{outcome}", task=push_to_redcap.name, event_id=str(event_id),
             attempts=claimed.attempts)  # fmt: skip
    return outcome


@protocol.job_task()
def push_to_redcap(event_id: str) -> str:
    """Send a filtered set of sessions to REDCap again, through the current mapping."""
    return protocol.run_door(push_to_redcap, event_id, _claim_and_push)
