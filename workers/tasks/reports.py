"""Reports (reports queue): outbox topic `reports.build`."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.reports import service as reports
from workers import protocol


async def _build(db: AsyncSession, settings: Settings, payload: dict[str, Any]) -> str | None:
    # Idempotent by report id: a report already built is kept as it is.
    return await reports.build(db, settings, uuid.UUID(payload["report_id"]))


@protocol.job_task()
def build_report(event_id: str) -> str:
    """Lay out one report's PDF and store it; the row's result_location names the report."""
    return protocol.run(build_report, event_id, _build)
