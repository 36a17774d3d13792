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
from collections import defaultdict
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
from server.schedules.windows import VisitRule, Window, cached_windows, local_date, windows

log = structlog.get_logger(__name__)

ACTIVE = (ParticipantStatus.enrolled.value, ParticipantStatus.active.value)
OCCURRENCE_COLUMNS = (
    "participant_id", "study_id", "site_id", "protocol_id", "visit_id",
    "occurrence", "window_start", "window_end", "status", "updated_at",
)  # fmt: skip
ASSIGNMENT_COLUMNS = (
    "participant_id", "study_id", "protocol_id", "timezone", "anchor_date", "assigned_at",
)  # fmt: skip

_UNASSIGNED = """
SELECT p.id, p.study_id, p.site_id, p.timezone, p.enrolled_at
FROM participants p
WHERE p.status = ANY($1::text[])
  AND p.study_id IN (SELECT study_id FROM schedule_protocols WHERE status = 'published')
  AND NOT EXISTS (SELECT 1 FROM schedule_assignments a WHERE a.participant_id = p.id)
  AND ($2::uuid IS NULL OR p.study_id = $2::uuid)
"""


# The study comes from the group's protocol. Ids: the batch's prefix (a time, then random)
# and the row's number, so the primary key grows at its right edge instead of taking half a
# million random inserts; participants come sorted, so their index does likewise.
_INSERT_GROUPS = """
INSERT INTO visit_occurrences (
    id, participant_id, study_id, site_id, protocol_id, visit_id,
    occurrence, window_start, window_end, status, updated_at
)
SELECT (($11::text) || lpad(to_hex(row_number() OVER ()), 16, '0'))::uuid,
    m.participant_id, p.study_id, m.site_id, g.protocol_id, g.visit_id,
    g.occurrence, g.window_start, g.window_end, 'upcoming', $10
FROM unnest($1::uuid[], $2::uuid[], $3::int[]) AS m(participant_id, site_id, grp)
JOIN unnest($4::int[], $5::uuid[], $6::uuid[], $7::int[], $8::timestamptz[], $9::timestamptz[])
    AS g(grp, protocol_id, visit_id, occurrence, window_start, window_end) USING (grp)
JOIN schedule_protocols p ON p.id = g.protocol_id
"""


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
    none yet; the number of participants. Idempotent: an assigned participant is skipped."""
    started = time.perf_counter()
    connection = await driver_connection(db)
    rows = await connection.fetch(_UNASSIGNED, list(ACTIVE), study_id)
    fetched = time.perf_counter()
    by_study: dict[uuid.UUID, list[tuple[uuid.UUID, uuid.UUID, str, datetime]]] = defaultdict(list)
    for pid, sid, site, tz, enrolled_at in rows:
        by_study[sid].append((pid, site, tz, enrolled_at))
    # Each participant names its group; each group's windows go once, and PostgreSQL joins
    # the two: a participant's five rows cost the server a join, not the client an encoding.
    members_p: list[uuid.UUID] = []
    members_site: list[uuid.UUID] = []
    members_group: list[int] = []
    g_index: list[int] = []
    g_protocol: list[uuid.UUID] = []
    g_visit: list[uuid.UUID] = []
    g_occurrence: list[int] = []
    g_start: list[datetime] = []
    g_end: list[datetime] = []
    assignments: list[tuple[object, ...]] = []
    groups: dict[tuple[uuid.UUID, str, date], int] = {}
    for sid, members in by_study.items():
        versions, rules = await _study_rules(db, sid)
        for pid, site, tz, enrolled_at in sorted(members):
            version = protocol_for(versions, enrolled_at)
            if version is None:
                continue
            anchor = local_date(enrolled_at, tz)
            key = (version.id, tz, anchor)
            group = groups.get(key)
            if group is None:
                group = groups[key] = len(groups)
                for w in cached_windows(rules[version.id], tz, anchor):
                    g_index.append(group)
                    g_protocol.append(version.id)
                    g_visit.append(w.visit_id)
                    g_occurrence.append(w.occurrence)
                    g_start.append(w.start)
                    g_end.append(w.end)
            members_p.append(pid)
            members_site.append(site)
            members_group.append(group)
            assignments.append((pid, sid, version.id, tz, anchor, now))
    computed = time.perf_counter()
    if assignments:
        await connection.copy_records_to_table(
            "schedule_assignments", records=assignments, columns=ASSIGNMENT_COLUMNS
        )
        assigned = time.perf_counter()
        await connection.execute(
            _INSERT_GROUPS,
            members_p, members_site, members_group,
            g_index, g_protocol, g_visit, g_occurrence, g_start, g_end, now, batch_prefix(now),
        )  # fmt: skip
        log.info(
            "schedules_materialised",
            participants=len(assignments),
            groups=len(groups),
            fetch_ms=round((fetched - started) * 1000),
            compute_ms=round((computed - fetched) * 1000),
            assign_ms=round((assigned - computed) * 1000),
            insert_ms=round((time.perf_counter() - assigned) * 1000),
        )
    return len(assignments)


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
