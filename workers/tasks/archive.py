"""Archive tasks (maintenance queue): outbox topic `archive.submission`."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.archive import service as archive_service
from server.archive.storage import storage_from_settings
from server.core.config import Settings
from workers.events import EventIds, event_task, run_events


async def _archive(db: AsyncSession, settings: Settings, payload: dict[str, Any]) -> str | None:
    storage = storage_from_settings(settings)
    submission_id = uuid.UUID(payload["submission_id"])
    return await archive_service.archive_submission(db, storage, submission_id)


@event_task()
def archive_submission(event_ids: EventIds) -> str:
    """Write the submission's archive object; the Job's result_location is its key."""
    return run_events(archive_submission, event_ids, _archive)
