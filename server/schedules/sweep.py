"""What the beat sweep does each minute: close and open windows, give new participants their
schedules, move a participant's future visits when their zone or anchor changed, and apply
a protocol version published for everyone."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.participants.models import Participant
from server.schedules import materialise
from server.schedules import protocols as protocols_service
from server.schedules.models import (
    PENDING,
    ScheduleAssignment,
    VisitOccurrence,
    VisitStatus,
)
from server.schedules.windows import local_date, windows

# Both read the partial index on window_start (status pending): only what is due or overdue.
_MISSED = text(
    "UPDATE visit_occurrences SET status = 'missed', updated_at = :now "
    "WHERE status IN ('upcoming', 'open') AND window_start <= :now AND window_end <= :now"
)
_OPENED = text(
    "UPDATE visit_occurrences SET status = 'open', updated_at = :now "
    "WHERE status = 'upcoming' AND window_start <= :now AND window_end > :now"
)


@dataclass
class SweepResult:
    missed: int = 0
    opened: int = 0
    materialised: int = 0
    recomputed: int = 0
    switched: int = 0


async def close_and_open(db: AsyncSession, *, now: datetime) -> tuple[int, int]:
    missed = (await db.execute(_MISSED, {"now": now})).rowcount  # type: ignore[attr-defined]
    opened = (await db.execute(_OPENED, {"now": now})).rowcount  # type: ignore[attr-defined]
    return int(missed or 0), int(opened or 0)


async def recompute_future(
    db: AsyncSession, *, participant_id: uuid.UUID, now: datetime, anchor_date: date | None = None
) -> int:
    """Windows from the participant's current zone (and anchor_date, when given) for their
    visits that have not opened yet; past and open ones keep theirs. How many moved."""
    assignment = await db.get(ScheduleAssignment, participant_id, with_for_update=True)
    participant = await db.get(Participant, participant_id)
    if assignment is None or participant is None:
        return 0
    tz = participant.timezone
    anchor = anchor_date or assignment.anchor_date
    visits = (await protocols_service.visits_of(db, [assignment.protocol_id]))[
        assignment.protocol_id
    ]
    found = windows(materialise.enrolment_rules(visits), tz, anchor)
    # Visits anchored on another: from the local date (in the new zone) of its first completion.
    by_key = {v.key: v for v in visits}
    for visit in visits:
        anchor_visit = by_key.get(visit.anchor_visit_key or "")
        if anchor_visit is None:
            continue
        done = await db.scalar(
            select(func.min(VisitOccurrence.completed_at)).where(
                VisitOccurrence.participant_id == participant_id,
                VisitOccurrence.visit_id == anchor_visit.id,
                VisitOccurrence.status == VisitStatus.completed,
            )
        )
        if done is not None:
            found += windows((materialise.rule_of(visit),), tz, local_date(done, tz))
    new = {(w.visit_id, w.occurrence): w for w in found}
    future = (
        await db.scalars(
            select(VisitOccurrence)
            .where(
                VisitOccurrence.participant_id == participant_id,
                VisitOccurrence.status.in_(PENDING),
                VisitOccurrence.window_start > now,
            )
            .with_for_update()
        )
    ).all()
    moved = 0
    for occurrence in future:
        window = new.get((occurrence.visit_id, occurrence.occurrence))
        if window is None or (window.start, window.end) == (
            occurrence.window_start,
            occurrence.window_end,
        ):
            continue
        occurrence.window_start, occurrence.window_end = window.start, window.end
        occurrence.updated_at = now
        moved += 1
    assignment.timezone = tz
    assignment.anchor_date = anchor
    await db.flush()
    return moved


async def recompute_moved_zones(db: AsyncSession, *, now: datetime) -> int:
    """Participants whose zone changed since their rows were computed."""
    changed = (
        await db.scalars(
            select(ScheduleAssignment.participant_id)
            .join(Participant, Participant.id == ScheduleAssignment.participant_id)
            .where(Participant.timezone != ScheduleAssignment.timezone)
        )
    ).all()
    for participant_id in changed:
        await recompute_future(db, participant_id=participant_id, now=now)
    return len(changed)


# One sweep at a time (beat may fire again while a slow one runs): a transaction-level
# advisory lock, freed by the commit, or by the server if the worker dies.
SWEEP_LOCK = 0x5C_4E_D0_1E


async def run_once(db: AsyncSession, *, now: datetime) -> SweepResult | None:
    """sweep(), unless another transaction is sweeping (None)."""
    locked = await db.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SWEEP_LOCK})
    return await sweep(db, now=now) if locked else None


async def sweep(db: AsyncSession, *, now: datetime) -> SweepResult:
    result = SweepResult()
    await db.flush()
    result.materialised = await materialise.materialise_new(db, now=now)
    result.switched = await materialise.switch_versions(db, now=now)
    result.recomputed = await recompute_moved_zones(db, now=now)
    result.missed, result.opened = await close_and_open(db, now=now)
    return result
