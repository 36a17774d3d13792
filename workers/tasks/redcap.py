"""REDCap queue: outbox topics `redcap.sync_submission` and `redcap.import_participants`."""

from __future__ import annotations

import uuid
from typing import Any

from celery import signals
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings, get_settings
from server.redcap import participant_import_job, sync
from server.redcap.throttle import Throttle
from workers import protocol


async def _sync(
    db: AsyncSession, settings: Settings, payload: dict[str, Any]
) -> protocol.Failed | None:
    # Idempotent; raises server.redcap.errors.TransientRedcapError for what is worth retrying.
    submission_id = uuid.UUID(payload["submission_id"])
    # Its connection's backlog after its own submission, well inside the run's time limit.
    backlog = min(sync.BACKLOG_SECONDS, settings.OUTBOX_LEASE_SECONDS / 3)
    outcome = await sync.sync_submission(db, settings, submission_id, backlog_seconds=backlog)
    # A record REDCap rejected is a failed job, not a succeeded one.
    if outcome.status == "failed":
        return protocol.Failed(outcome.error or "REDCap refused this submission.")
    return None


@protocol.job_task()
def sync_submission(event_id: str) -> str:
    """Send the submission's results (and its connection's backlog, in order) to REDCap."""
    return protocol.run(sync_submission, event_id, _sync)


async def _import(
    db: AsyncSession, settings: Settings, payload: dict[str, Any]
) -> protocol.Failed | None:
    # REDCap is asked before `db` is first used: no transaction is open during the calls.
    error = await participant_import_job.run_import(db, settings, uuid.UUID(payload["import_id"]))
    return protocol.Failed(error) if error is not None else None


@protocol.job_task()
def import_participants(event_id: str) -> str:
    """Enrol the records of a REDCap form as participants, all or none; the report is kept."""
    return protocol.run(import_participants, event_id, _import)


def _warm_throttle(**_: Any) -> None:
    """worker_process_init: the REDCap throttle's storage made as the process starts. `limits`
    imports its Redis clients (redis and valkey, their versions read from package metadata)
    when its first storage is made: 80 ms at rest, several times that on a busy machine,
    inside the process's first sync otherwise."""
    Throttle(get_settings())


signals.worker_process_init.connect(_warm_throttle, weak=False)
