"""Exports (exports queue): outbox topic `exports.build`.

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
from server.exports import build
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
