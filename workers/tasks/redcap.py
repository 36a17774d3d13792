"""REDCap queue: outbox topic `redcap.sync_submission`."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.redcap import claim, sync
from workers import runtime
from workers.events import EventIds, event_task, run_events


async def _sync(db: AsyncSession, settings: Settings, payload: dict[str, Any]) -> str | None:
    # Stopped mid-call (the worker lost the broker), it lets go of its claims on the way out.
    claim.forget_held()
    runtime.on_abandon(claim.release_held)
    submission_id = uuid.UUID(payload["submission_id"])
    # Idempotent; raises server.redcap.errors.TransientRedcapError for what is worth retrying.
    # Its writes (the submission's sync state) commit with the job's completion; after a full
    # batch, at once, and the task goes on with the connection's backlog: BACKLOG_SECONDS for
    # the whole message (its events share the task's time limits), not for each event.
    backlog = max(0.0, sync.BACKLOG_SECONDS - runtime.message_age())
    await sync.sync_submission(db, settings, submission_id, backlog_seconds=backlog)
    return None


@event_task()
def sync_submission(event_ids: EventIds) -> str:
    """Send one submission's results to its study's REDCap project."""
    return run_events(sync_submission, event_ids, _sync)
