"""Archive tasks (maintenance queue): outbox topic `archive.submission`."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.archive import service as archive_service
from server.archive.storage import storage_from_settings
from server.core.config import Settings
from workers import protocol


async def _archive(db: AsyncSession, settings: Settings, payload: dict[str, Any]) -> str | None:
    storage = storage_from_settings(settings)
    submission_id = uuid.UUID(payload["submission_id"])
    return await archive_service.archive_submission(db, storage, submission_id)


@protocol.job_task()
def archive_submission(event_id: str) -> str:
    """Write the submission's archive object; the row's result_location is its key."""
    return protocol.run(archive_submission, event_id, _archive)
