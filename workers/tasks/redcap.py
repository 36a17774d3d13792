"""REDCap queue: outbox topic `redcap.sync_submission`."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.redcap import claim, sync
from workers import protocol, runtime


async def _sync(
    db: AsyncSession, settings: Settings, payload: dict[str, Any]
) -> protocol.Failed | None:
    # Stopped mid-call (the worker lost the broker), it lets go of its claims on the way out.
    claim.forget_held()
    runtime.on_abandon(claim.release_held)
    submission_id = uuid.UUID(payload["submission_id"])
    # Idempotent; raises server.redcap.errors.TransientRedcapError for what is worth retrying.
    backlog = max(0.0, sync.BACKLOG_SECONDS - runtime.message_age())
    try:
        outcome = await sync.sync_submission(db, settings, submission_id, backlog_seconds=backlog)
    finally:
        runtime.forget_abandon()
    # A record REDCap rejected is a failed job, not a succeeded one.
    if outcome.status == "failed":
        return protocol.Failed(outcome.error or "REDCap refused this submission.")
    return None


@protocol.job_task()
def sync_submission(event_id: str) -> str:
    """Send one submission's results to its study's REDCap project."""
    return protocol.run(sync_submission, event_id, _sync)
