"""Protocols into visit_occurrences rows: in bulk for new participants, one by one for a
participant whose zone or anchor changed or whose protocol was replaced for everyone.

The bulk path is what the beat sweep and `make bench-schedules` run: participants are grouped
by (zone, local enrolment date, protocol version), whose windows are identical, so zoneinfo
runs once per group and the rows go to PostgreSQL with one binary COPY.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Sequence
from datetime import date, datetime

import structlog
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.db import driver_connection
from server.participants.models import Participant, ParticipantStatus
from server.schedules import protocols as protocols_service
from server.schedules.models import (
    PENDING,
    AppliesTo,
    ScheduleAssignment,
    ScheduleProtocol,
    ScheduleVisit,
    VisitOccurrence,
    VisitStatus,
)
from server.schedules.windows import VisitRule, Window, cached_windows, windows

log = structlog.get_logger(__name__)

ACTIVE = (ParticipantStatus.enrolled.value, ParticipantStatus.active.value)
OCCURRENCE_COLUMNS = (
    "participant_id", "study_id", "site_id", "protocol_id", "visit_id",
    "occurrence", "window_start", "window_end", "status", "updated_at",
)  # fmt: skip
ASSIGNMENT_COLUMNS = (
    "participant_id", "study_id", "protocol_id", "timezone", "anchor_date", "assigned_at",
)  # fmt: skip

# Active participants of a study with a published protocol and no schedule yet, with the
# version they follow (protocol_for, in SQL: the latest published version that is for
# everyone, or published by their enrolment, or the first) and their local enrolment date.
# A zone PostgreSQL does not know would fail the batch: such a participant waits (logged).
_BATCH = """
SELECT p.id AS participant_id, p.study_id, p.site_id, p.timezone AS tz,
    (p.enrolled_at AT TIME ZONE p.timezone)::date AS anchor,
    (SELECT s.id FROM schedule_protocols s
     WHERE s.study_id = p.study_id AND s.status = 'published'
       AND (s.applies_to = 'everyone_from' OR s.published_at <= p.enrolled_at
            OR s.version = (SELECT min(f.version) FROM schedule_protocols f
                            WHERE f.study_id = p.study_id AND f.status = 'published'))
     ORDER BY s.version DESC LIMIT 1) AS protocol_id
FROM participants p
WHERE p.status = ANY($1::text[])
  AND p.study_id IN (SELECT study_id FROM schedule_protocols WHERE status = 'published')
  AND NOT EXISTS (SELECT 1 FROM schedule_assignments a WHERE a.participant_id = p.id)
  AND ($2::uuid IS NULL OR p.study_id = $2::uuid)
  AND p.timezone IN (SELECT name FROM pg_timezone_names)
"""
# Constant text on both sides (no value is formatted in): the batch's query, written once.
_GROUPS = f"SELECT protocol_id, tz, anchor, count(*) FROM ({_BATCH}) b GROUP BY 1, 2, 3"  # noqa: S608
# One statement: the batch again, limited to the groups whose windows were computed (one
# enrolled since is left for the next sweep), its assignments and its visits. Ids: the batch's
# prefix (a time, then random) and the row's number, so the primary key grows at its right
# edge instead of taking half a million random inserts; rows go in participant order, which
# keeps the participant index's inserts together too (measured: 20.5k to 23-24k a second).
_WRITE = f"""
WITH batch AS MATERIALIZED (
    SELECT b.* FROM ({_BATCH}) b
    JOIN unnest($3::uuid[], $4::text[], $5::date[]) AS k(protocol_id, tz, anchor)
        USING (protocol_id, tz, anchor)
), visits AS (
    INSERT INTO visit_occurrences (
        id, participant_id, study_id, site_id, protocol_id, visit_id,
        occurrence, window_start, window_end, status, updated_at
    )
    SELECT ($7::text || lpad(to_hex(row_number() OVER (ORDER BY b.participant_id)), 16, '0'))
            ::uuid,
        b.participant_id, b.study_id, b.site_id, b.protocol_id, g.visit_id,
        g.occurrence, g.window_start, g.window_end, 'upcoming', $6
    FROM batch b
    JOIN unnest($8::uuid[], $9::text[], $10::date[], $11::uuid[], $12::int[],
                $13::timestamptz[], $14::timestamptz[])
        AS g(protocol_id, tz, anchor, visit_id, occurrence, window_start, window_end)
        USING (protocol_id, tz, anchor)
    ORDER BY b.participant_id
)
INSERT INTO schedule_assignments (
    participant_id, study_id, protocol_id, timezone, anchor_date, assigned_at
)
SELECT participant_id, study_id, protocol_id, tz, anchor, $6 FROM batch
"""  # noqa: S608


def batch_prefix(now: datetime) -> str:
    """16 hex digits: the batch's second, then 32 random bits."""
    return f"{int(now.timestamp()) & 0xFFFFFFFF:08x}{secrets.randbits(32):08x}"


def rule_of(visit: ScheduleVisit) -> VisitRule:
    return VisitRule(
        visit_id=visit.id,
        offset_days=visit.offset_days,
        time_of_day=visit.time_of_day,
        window_before_minutes=visit.window_before_minutes,
        window_after_minutes=visit.window_after_minutes,
        repeat=visit.repeat,
        repeat_count=visit.repeat_count,
    )


def enrolment_rules(visits: Sequence[ScheduleVisit]) -> tuple[VisitRule, ...]:
    """The visits that follow from enrolment; those anchored on another visit wait for it."""
    return tuple(rule_of(v) for v in visits if v.anchor_visit_key is None)


def protocol_for(
    versions: Sequence[ScheduleProtocol], enrolled_at: datetime
) -> ScheduleProtocol | None:
    """The version a participant follows (versions: published, oldest first). The first one
    applies to everyone; a later one to those enrolled after its publication, or, published
    for everyone_from, to everyone (from its effective date: see switch_versions)."""
    chosen = versions[0] if versions else None
    for version in versions[1:]:
        published_at = version.published_at
        if version.applies_to == AppliesTo.everyone_from or (
            published_at is not None and published_at <= enrolled_at
        ):
            chosen = version
    return chosen


async def _study_rules(
    db: AsyncSession, study_id: uuid.UUID
) -> tuple[list[ScheduleProtocol], dict[uuid.UUID, tuple[VisitRule, ...]]]:
    versions = await protocols_service.published(db, study_id)
    visits = await protocols_service.visits_of(db, [v.id for v in versions])
    return versions, {v.id: enrolment_rules(visits[v.id]) for v in versions}


async def materialise_new(
    db: AsyncSession, *, now: datetime, study_id: uuid.UUID | None = None
) -> int:
    """Schedules for every active participant of a study with a published protocol who has
    none yet; the number of participants. Idempotent: an assigned participant is skipped.

    PostgreSQL finds and groups them by (version, zone, local enrolment date); zoneinfo
    computes each group's windows once (server.schedules.windows' rule); one statement joins
    members to their group's windows. No participant row comes to the client."""
    started = time.perf_counter()
    connection = await driver_connection(db)
    groups = await connection.fetch(_GROUPS, list(ACTIVE), study_id)
    if not groups:
        return 0
    protocol_ids = sorted({g["protocol_id"] for g in groups})
    visits = await protocols_service.visits_of(db, protocol_ids)
    rules = {pid: enrolment_rules(visits[pid]) for pid in protocol_ids}
    k_protocol, k_tz, k_anchor = [], [], []
    w_protocol: list[uuid.UUID] = []
    w_tz: list[str] = []
    w_anchor: list[date] = []
    w_visit: list[uuid.UUID] = []
    w_occurrence: list[int] = []
    w_start: list[datetime] = []
    w_end: list[datetime] = []
    for protocol_id, tz, anchor, _ in groups:
        k_protocol.append(protocol_id)
        k_tz.append(tz)
        k_anchor.append(anchor)
        for w in cached_windows(rules[protocol_id], tz, anchor):
            w_protocol.append(protocol_id)
            w_tz.append(tz)
            w_anchor.append(anchor)
            w_visit.append(w.visit_id)
            w_occurrence.append(w.occurrence)
            w_start.append(w.start)
            w_end.append(w.end)
    computed = time.perf_counter()
    status = await connection.execute(
        _WRITE,
        list(ACTIVE), study_id, k_protocol, k_tz, k_anchor, now, batch_prefix(now),
        w_protocol, w_tz, w_anchor, w_visit, w_occurrence, w_start, w_end,
    )  # fmt: skip
    count = int(status.split()[-1])
    log.info(
        "schedules_materialised",
        participants=count,
        groups=len(groups),
        group_ms=round((computed - started) * 1000),
        write_ms=round((time.perf_counter() - computed) * 1000),
    )
    return count


def _occurrence_rows(
    participant: Participant, protocol_id: uuid.UUID, found: list[Window], now: datetime
) -> list[dict[str, object]]:
    return [
        {
            "participant_id": participant.id,
            "study_id": participant.study_id,
            "site_id": participant.site_id,
            "protocol_id": protocol_id,
            "visit_id": w.visit_id,
            "occurrence": w.occurrence,
            "window_start": w.start,
            "window_end": w.end,
            "status": VisitStatus.upcoming,
            "updated_at": now,
        }
        for w in found
    ]


async def insert_windows(
    db: AsyncSession,
    participant: Participant,
    protocol_id: uuid.UUID,
    found: list[Window],
    now: datetime,
) -> None:
    rows = _occurrence_rows(participant, protocol_id, found, now)
    if rows:
        await db.execute(insert(VisitOccurrence).values(rows))


async def switch_versions(db: AsyncSession, *, now: datetime) -> int:
    """Participants whose study published a version for everyone: their pending rows from its
    effective date are cancelled and the new version's take their place. Earlier rows stay."""
    studies = (
        await db.scalars(
            select(ScheduleProtocol.study_id)
            .where(
                ScheduleProtocol.applies_to == AppliesTo.everyone_from,
                ScheduleProtocol.published_at.is_not(None),
            )
            .distinct()
        )
    ).all()
    switched = 0
    for sid in studies:
        versions, rules = await _study_rules(db, sid)
        pairs = await db.execute(
            select(ScheduleAssignment, Participant)
            .join(Participant, Participant.id == ScheduleAssignment.participant_id)
            .where(ScheduleAssignment.study_id == sid, Participant.status.in_(ACTIVE))
        )
        for assignment, participant in pairs:
            target = protocol_for(versions, participant.enrolled_at)
            if target is None or target.id == assignment.protocol_id:
                continue
            start = target.effective_from or now
            await db.execute(
                update(VisitOccurrence)
                .where(
                    VisitOccurrence.participant_id == participant.id,
                    VisitOccurrence.protocol_id != target.id,
                    VisitOccurrence.status.in_(PENDING),
                    VisitOccurrence.window_start >= start,
                )
                .values(
                    status=VisitStatus.cancelled,
                    status_reason=f"protocol version {target.version}",
                    updated_at=now,
                )
            )
            found = windows(rules[target.id], assignment.timezone, assignment.anchor_date)
            await insert_windows(
                db, participant, target.id, [w for w in found if w.start >= start], now
            )
            assignment.protocol_id = target.id
            switched += 1
    await db.flush()
    return switched
