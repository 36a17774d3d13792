"""Protocol versions: drafts change, a published version never does (like batteries)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

import structlog
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.batteries.models import Battery
from server.core import clock
from server.core.catalogue import PublicationStatus
from server.core.errors import Conflict, NotFound, Unprocessable
from server.schedules.models import AppliesTo, ScheduleProtocol, ScheduleVisit
from server.schedules.schemas import (
    ProtocolCreate,
    ProtocolPublish,
    ProtocolRead,
    ProtocolUpdate,
    VisitIn,
    VisitRead,
)

log = structlog.get_logger(__name__)


def read(protocol: ScheduleProtocol, visits: list[ScheduleVisit]) -> ProtocolRead:
    return ProtocolRead(
        id=protocol.id,
        study_id=protocol.study_id,
        version=protocol.version,
        name=protocol.name,
        status=protocol.status,
        applies_to=protocol.applies_to,
        effective_from=protocol.effective_from,
        published_at=protocol.published_at,
        visits=[VisitRead.model_validate(v) for v in visits],
    )


async def get(db: AsyncSession, protocol_id: uuid.UUID) -> ScheduleProtocol:
    protocol = await db.get(ScheduleProtocol, protocol_id)
    if protocol is None:
        raise NotFound("No such protocol.")
    return protocol


async def visits_of(
    db: AsyncSession, protocol_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[ScheduleVisit]]:
    out: dict[uuid.UUID, list[ScheduleVisit]] = defaultdict(list)
    if protocol_ids:
        rows = await db.execute(
            select(ScheduleVisit)
            .where(ScheduleVisit.protocol_id.in_(protocol_ids))
            .order_by(ScheduleVisit.protocol_id, ScheduleVisit.position)
        )
        for visit in rows.scalars():
            out[visit.protocol_id].append(visit)
    return out


async def list_protocols(db: AsyncSession, *, study_id: uuid.UUID) -> list[ProtocolRead]:
    protocols = list(
        (
            await db.execute(
                select(ScheduleProtocol)
                .where(ScheduleProtocol.study_id == study_id)
                .order_by(ScheduleProtocol.version)
            )
        ).scalars()
    )
    visits = await visits_of(db, [p.id for p in protocols])
    return [read(p, visits[p.id]) for p in protocols]


async def published(db: AsyncSession, study_id: uuid.UUID) -> list[ScheduleProtocol]:
    """The study's published versions, oldest first."""
    rows = await db.execute(
        select(ScheduleProtocol)
        .where(
            ScheduleProtocol.study_id == study_id,
            ScheduleProtocol.status == PublicationStatus.published,
        )
        .order_by(ScheduleProtocol.version)
    )
    return list(rows.scalars())


async def _check_visits(db: AsyncSession, study_id: uuid.UUID, visits: list[VisitIn]) -> None:
    """422 naming each visit that cannot be: an unknown or draft battery, a key twice, an
    anchor that is not an earlier visit of this protocol."""
    ids = {v.battery_id for v in visits}
    batteries = {
        b.id: b for b in (await db.execute(select(Battery).where(Battery.id.in_(ids)))).scalars()
    }
    problems: list[dict[str, Any]] = []
    seen: set[str] = set()
    for n, visit in enumerate(visits):
        loc = ["body", "visits", n]
        battery = batteries.get(visit.battery_id)
        if battery is None or battery.study_id != study_id:
            problems.append({"loc": [*loc, "battery_id"], "msg": "no such battery in this study"})
        elif battery.status != PublicationStatus.published:
            problems.append({"loc": [*loc, "battery_id"], "msg": "the battery is a draft"})
        if visit.key in seen:
            problems.append({"loc": [*loc, "key"], "msg": f"visit key {visit.key!r} repeats"})
        if visit.anchor_visit_key is not None and visit.anchor_visit_key not in seen:
            problems.append(
                {"loc": [*loc, "anchor_visit_key"], "msg": "not the key of an earlier visit"}
            )
        seen.add(visit.key)
    if problems:
        raise Unprocessable("Some visits cannot be part of this protocol.", details=problems)


async def _set_visits(
    db: AsyncSession, protocol: ScheduleProtocol, visits: list[VisitIn]
) -> list[ScheduleVisit]:
    await db.execute(delete(ScheduleVisit).where(ScheduleVisit.protocol_id == protocol.id))
    rows = [
        ScheduleVisit(protocol_id=protocol.id, position=n, **visit.model_dump())
        for n, visit in enumerate(visits)
    ]
    db.add_all(rows)
    await db.flush()
    return rows


async def create(
    db: AsyncSession, *, study_id: uuid.UUID, protocol_in: ProtocolCreate
) -> ProtocolRead:
    await _check_visits(db, study_id, protocol_in.visits)
    # Versions are numbered by the server; the unique key settles two creations at once (409).
    latest = await db.scalar(
        select(func.max(ScheduleProtocol.version)).where(ScheduleProtocol.study_id == study_id)
    )
    protocol = ScheduleProtocol(study_id=study_id, version=(latest or 0) + 1, name=protocol_in.name)
    db.add(protocol)
    await db.flush()
    visits = await _set_visits(db, protocol, protocol_in.visits)
    log.info("protocol_created", protocol_id=str(protocol.id), study_id=str(study_id))
    return read(protocol, visits)


def _require_draft(protocol: ScheduleProtocol) -> None:
    if protocol.status == PublicationStatus.published:
        raise Conflict(
            "A published protocol is immutable; create a new version.",
            error_code="protocol_published",
        )


async def update(
    db: AsyncSession, *, protocol: ScheduleProtocol, protocol_in: ProtocolUpdate
) -> ProtocolRead:
    _require_draft(protocol)
    if protocol_in.visits is not None:
        await _check_visits(db, protocol.study_id, protocol_in.visits)
        visits = await _set_visits(db, protocol, protocol_in.visits)
    else:
        visits = (await visits_of(db, [protocol.id]))[protocol.id]
    if protocol_in.name is not None:
        protocol.name = protocol_in.name
    protocol.updated_at = clock.now()
    await db.flush()
    return read(protocol, visits)


async def publish(
    db: AsyncSession, *, protocol: ScheduleProtocol, publish_in: ProtocolPublish
) -> ProtocolRead:
    """Publish; the beat sweep then gives it to whom it applies (server.schedules.materialise)."""
    _require_draft(protocol)
    protocol.status = PublicationStatus.published
    protocol.published_at = clock.now()
    protocol.applies_to = publish_in.applies_to
    protocol.effective_from = (
        publish_in.effective_from if publish_in.applies_to == AppliesTo.everyone_from else None
    )
    await db.flush()
    log.info("protocol_published", protocol_id=str(protocol.id), study_id=str(protocol.study_id))
    return read(protocol, (await visits_of(db, [protocol.id]))[protocol.id])
