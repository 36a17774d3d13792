"""A participant's visits: reading them, coordinators' overrides, and sessions completing them.

Stored status is upcoming until the beat sweep opens or closes a window; every read goes
through effective_status, so an answer between two sweeps is right all the same.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.core import clock
from server.core.errors import Conflict, NotFound, Unprocessable
from server.participants.models import Participant
from server.schedules import materialise
from server.schedules.models import (
    PENDING,
    ScheduleAssignment,
    ScheduleVisit,
    VisitOccurrence,
    VisitStatus,
)
from server.schedules.schemas import MoveIn, MySchedule, OccurrenceRead, ReopenIn
from server.schedules.windows import local_date, windows

NEXT_LIMIT = 5
# A completed session may close a visit the sweep already called missed: a device that was
# offline syncs late, and its session still ended inside the window.
COMPLETABLE = (*PENDING, VisitStatus.missed)


def effective_status(occurrence: VisitOccurrence, now: datetime) -> VisitStatus:
    if occurrence.status not in PENDING:
        return occurrence.status
    if now >= occurrence.window_end:
        return VisitStatus.missed
    return VisitStatus.open if now >= occurrence.window_start else VisitStatus.upcoming


def _read(occurrence: VisitOccurrence, visit: ScheduleVisit, now: datetime) -> OccurrenceRead:
    return OccurrenceRead(
        id=occurrence.id,
        participant_id=occurrence.participant_id,
        visit_key=visit.key,
        label=visit.label,
        battery_id=visit.battery_id,
        required=visit.required,
        occurrence=occurrence.occurrence,
        window_start=occurrence.window_start,
        window_end=occurrence.window_end,
        status=effective_status(occurrence, now),
        completed_at=occurrence.completed_at,
        session_id=occurrence.session_id,
        status_reason=occurrence.status_reason,
    )


def _with_visit() -> Select[VisitOccurrence, ScheduleVisit]:
    return select(VisitOccurrence, ScheduleVisit).join(
        ScheduleVisit, ScheduleVisit.id == VisitOccurrence.visit_id
    )


async def participant_schedule(
    db: AsyncSession, *, participant_id: uuid.UUID
) -> list[OccurrenceRead]:
    now = clock.now()
    rows = await db.execute(
        _with_visit()
        .where(VisitOccurrence.participant_id == participant_id)
        .order_by(VisitOccurrence.window_start, ScheduleVisit.position)
    )
    return [_read(o, v, now) for o, v in rows]


async def my_schedule(db: AsyncSession, *, participant_id: uuid.UUID) -> MySchedule:
    """What the app shows: the windows open now, and the next ones to open."""
    now = clock.now()
    base = _with_visit().where(
        VisitOccurrence.participant_id == participant_id, VisitOccurrence.status.in_(PENDING)
    )
    due = await db.execute(
        base.where(VisitOccurrence.window_start <= now, VisitOccurrence.window_end > now).order_by(
            VisitOccurrence.window_end
        )
    )
    upcoming = await db.execute(
        base.where(VisitOccurrence.window_start > now)
        .order_by(VisitOccurrence.window_start)
        .limit(NEXT_LIMIT)
    )
    tz = await db.scalar(select(Participant.timezone).where(Participant.id == participant_id))
    return MySchedule(
        timezone=tz or "UTC",
        due_now=[_read(o, v, now) for o, v in due],
        next=[_read(o, v, now) for o, v in upcoming],
    )


async def get_occurrence(
    db: AsyncSession, occurrence_id: uuid.UUID, *, lock: bool = False
) -> VisitOccurrence:
    occurrence = await db.get(
        VisitOccurrence, occurrence_id, with_for_update=lock, populate_existing=lock
    )
    if occurrence is None:
        raise NotFound("No such visit.")
    return occurrence


async def read_one(db: AsyncSession, occurrence: VisitOccurrence) -> OccurrenceRead:
    visit = await db.get_one(ScheduleVisit, occurrence.visit_id)
    return _read(occurrence, visit, clock.now())


def _set(occurrence: VisitOccurrence, status: VisitStatus, reason: str | None) -> None:
    occurrence.status = status
    occurrence.status_reason = reason
    occurrence.updated_at = clock.now()


async def move(
    db: AsyncSession, *, occurrence: VisitOccurrence, move_in: MoveIn
) -> VisitOccurrence:
    if occurrence.status not in COMPLETABLE:
        raise Conflict(
            f"A {occurrence.status.value} visit cannot be moved; reopen it first.",
            error_code="visit_closed",
        )
    occurrence.window_start = move_in.window_start
    occurrence.window_end = move_in.window_end
    # Pending again; effective_status (and the next sweep) say whether it is open or missed.
    _set(occurrence, VisitStatus.upcoming, move_in.reason)
    await db.flush()
    return occurrence


async def skip(db: AsyncSession, *, occurrence: VisitOccurrence, reason: str) -> VisitOccurrence:
    if occurrence.status not in COMPLETABLE:
        raise Conflict(
            f"A {occurrence.status.value} visit cannot be skipped.", error_code="visit_closed"
        )
    _set(occurrence, VisitStatus.skipped, reason)
    await db.flush()
    return occurrence


async def reopen(
    db: AsyncSession, *, occurrence: VisitOccurrence, reopen_in: ReopenIn
) -> VisitOccurrence:
    now = clock.now()
    if occurrence.status in (*PENDING, VisitStatus.completed) and occurrence.window_end > now:
        raise Conflict("This visit is not closed.", error_code="visit_not_closed")
    if occurrence.status == VisitStatus.completed:
        raise Conflict("A completed visit cannot be reopened.", error_code="visit_completed")
    end = reopen_in.window_end or now + timedelta(days=1)
    if end <= now:
        raise Unprocessable(
            "The reopened window must close in the future.",
            details=[{"loc": ["body", "window_end"], "msg": "must be in the future"}],
        )
    occurrence.window_start = min(occurrence.window_start, now)
    occurrence.window_end = end
    _set(occurrence, VisitStatus.open, reopen_in.reason)
    await db.flush()
    return occurrence


async def visit_for_start(
    db: AsyncSession, *, participant_id: uuid.UUID, visit_id: uuid.UUID, battery_id: uuid.UUID
) -> uuid.UUID:
    """The visit a session is started for: the participant's own, of the session's battery,
    not skipped or cancelled (whether it ends inside the window is decided at its end)."""
    occurrence = await db.get(VisitOccurrence, visit_id)
    if occurrence is None or occurrence.participant_id != participant_id:
        raise Unprocessable(
            "No such visit in your schedule.",
            details=[{"loc": ["body", "visit_id"], "msg": "unknown visit"}],
        )
    visit = await db.get_one(ScheduleVisit, occurrence.visit_id)
    if visit.battery_id != battery_id:
        raise Unprocessable(
            "This visit runs another battery.",
            details=[{"loc": ["body", "battery_id"], "msg": "not the visit's battery"}],
        )
    if occurrence.status not in (*COMPLETABLE, VisitStatus.completed):
        raise Conflict(f"This visit is {occurrence.status.value}.", error_code="visit_closed")
    return occurrence.id


async def complete_from_session(
    db: AsyncSession,
    *,
    participant_id: uuid.UUID,
    battery_id: uuid.UUID,
    session_id: uuid.UUID,
    visit_id: uuid.UUID | None,
    completed_at: datetime,
) -> uuid.UUID | None:
    """A completed session completes its visit if it ended inside the window (the visit it
    was started for, else the participant's window of that battery open at that time); the
    visit's id, or None when no window held it. Visits anchored on this one follow."""
    query = (
        _with_visit()
        .where(
            VisitOccurrence.participant_id == participant_id,
            ScheduleVisit.battery_id == battery_id,
            VisitOccurrence.status.in_(COMPLETABLE),
            VisitOccurrence.window_start <= completed_at,
            VisitOccurrence.window_end > completed_at,
        )
        .order_by(VisitOccurrence.window_start)
        .limit(1)
        .with_for_update(of=VisitOccurrence)
    )
    if visit_id is not None:
        query = query.where(VisitOccurrence.id == visit_id)
    found = (await db.execute(query)).first()
    if found is None:
        return None
    occurrence, visit = found
    occurrence.status = VisitStatus.completed
    occurrence.completed_at = completed_at
    occurrence.session_id = session_id
    occurrence.updated_at = clock.now()
    await db.flush()
    await _follow_anchor(db, occurrence, visit, completed_at)
    return occurrence.id


async def _follow_anchor(
    db: AsyncSession, occurrence: VisitOccurrence, visit: ScheduleVisit, completed_at: datetime
) -> None:
    """Materialise the visits anchored on this one, from the local date it was first
    completed (its later occurrences, or a replay, find them there already)."""
    already = select(VisitOccurrence.id).where(
        VisitOccurrence.participant_id == occurrence.participant_id,
        VisitOccurrence.visit_id == ScheduleVisit.id,
    )
    dependents = list(
        (
            await db.scalars(
                select(ScheduleVisit).where(
                    ScheduleVisit.protocol_id == visit.protocol_id,
                    ScheduleVisit.anchor_visit_key == visit.key,
                    ~already.exists(),
                )
            )
        ).all()
    )
    if not dependents:
        return
    participant = await db.get_one(Participant, occurrence.participant_id)
    anchor = local_date(completed_at, participant.timezone)
    rules = tuple(materialise.rule_of(v) for v in dependents)
    await materialise.insert_windows(
        db,
        participant,
        visit.protocol_id,
        windows(rules, participant.timezone, anchor),
        clock.now(),
    )


async def cancel_future_visits(
    db: AsyncSession, *, participant_id: uuid.UUID, at: datetime, reason: str
) -> int:
    """Withdrawal: every pending visit whose window has not closed by `at` is cancelled;
    how many. Past visits keep their status."""
    result = await db.execute(
        update(VisitOccurrence)
        .where(
            VisitOccurrence.participant_id == participant_id,
            VisitOccurrence.status.in_(PENDING),
            VisitOccurrence.window_end > at,
        )
        .values(status=VisitStatus.cancelled, status_reason=reason[:500], updated_at=clock.now())
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def assignment_of(db: AsyncSession, participant_id: uuid.UUID) -> ScheduleAssignment | None:
    return await db.get(ScheduleAssignment, participant_id)
