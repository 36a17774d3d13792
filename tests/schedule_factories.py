"""Protocols and visit occurrences for tests (flush, never commit)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.batteries.models import Battery
from server.core.catalogue import PublicationStatus
from server.participants.models import Participant
from server.schedules.models import (
    AppliesTo,
    Repeat,
    ScheduleProtocol,
    ScheduleVisit,
    VisitOccurrence,
)
from server.studies.models import Study


async def create_protocol(
    db: AsyncSession,
    study: Study,
    battery: Battery,
    *,
    version: int = 1,
    visits: list[dict[str, Any]] | None = None,
    applies_to: AppliesTo = AppliesTo.new_enrolments,
    effective_from: datetime | None = None,
    published_at: datetime | None = None,
) -> tuple[ScheduleProtocol, list[ScheduleVisit]]:
    """A published protocol; by default baseline, week 1, week 4 and week 12 at 09:00 local."""
    protocol = ScheduleProtocol(
        study_id=study.id,
        version=version,
        name=f"Protocol v{version}",
        status=PublicationStatus.published,
        applies_to=applies_to,
        effective_from=effective_from,
        published_at=published_at or datetime(2026, 1, 1, tzinfo=UTC),
    )
    db.add(protocol)
    await db.flush()
    specs = visits or [
        {"key": "baseline", "offset_days": 0},
        {"key": "week1", "offset_days": 7},
        {"key": "week4", "offset_days": 28},
        {"key": "week12", "offset_days": 84},
    ]
    rows = []
    for position, spec in enumerate(specs):
        fields: dict[str, Any] = {
            "label": spec["key"].title(),
            "time_of_day": time(9, 0),
            "window_before_minutes": 0,
            "window_after_minutes": 12 * 60,
            "repeat": Repeat.none,
            "repeat_count": 1,
            **spec,
        }
        rows.append(
            ScheduleVisit(
                protocol_id=protocol.id, position=position, battery_id=battery.id, **fields
            )
        )
    db.add_all(rows)
    await db.flush()
    return protocol, rows


async def create_occurrence(
    db: AsyncSession,
    participant: Participant,
    protocol: ScheduleProtocol,
    visit: ScheduleVisit,
    *,
    start: datetime | None = None,
    hours: int = 24,
) -> VisitOccurrence:
    start = start or datetime.now(UTC)
    occurrence = VisitOccurrence(
        participant_id=participant.id,
        study_id=participant.study_id,
        site_id=participant.site_id,
        protocol_id=protocol.id,
        visit_id=visit.id,
        occurrence=0,
        window_start=start,
        window_end=start + timedelta(hours=hours),
    )
    db.add(occurrence)
    await db.flush()
    return occurrence
