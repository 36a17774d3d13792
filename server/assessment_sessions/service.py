"""Assessment sessions: started and ended by the participant's device.

How a session looks with its submissions (the state a device resumes from, the staff's list)
is server.submissions.session_state's: a submission belongs to a session, so submissions
import sessions, never the reverse."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.assessment_sessions.models import AssessmentSession, SessionStatus
from server.assessment_sessions.schemas import BatteryModuleRef, SessionEnd, SessionStart
from server.batteries.models import Battery, BatteryModule
from server.consent import service as consent_service
from server.core import clock
from server.core.catalogue import PublicationStatus
from server.core.errors import Conflict, NotFound, Unprocessable
from server.modules.models import Module
from server.outbox import service as outbox
from server.participants.schemas import ParticipantRef
from server.schedules import service as schedules_service


async def battery_modules(db: AsyncSession, battery_id: uuid.UUID) -> list[BatteryModuleRef]:
    rows = await db.execute(
        select(BatteryModule.position, Module.id, Module.key, Module.version)
        .join(Module, Module.id == BatteryModule.module_id)
        .where(BatteryModule.battery_id == battery_id)
        .order_by(BatteryModule.position)
    )
    return [BatteryModuleRef(position=p, module_id=i, key=k, version=v) for p, i, k, v in rows]


async def get_own(
    db: AsyncSession,
    *,
    participant: ParticipantRef,
    session_id: uuid.UUID,
    for_update: bool = False,
) -> AssessmentSession:
    # populate_existing with the lock: what another transaction committed while this one
    # waited must replace what this session may have loaded before.
    session = await db.get(
        AssessmentSession, session_id, with_for_update=for_update, populate_existing=for_update
    )
    # Another participant's session does not exist as far as this one is concerned.
    if session is None or session.participant_id != participant.id:
        raise NotFound("No such session.")
    return session


def _resumable(
    participant: ParticipantRef, session_in: SessionStart, existing: AssessmentSession
) -> None:
    if existing.participant_id != participant.id:
        raise Conflict("This session id is already in use.", error_code="session_id_taken")
    if existing.battery_id != session_in.battery_id:
        raise Conflict(
            "This session was started with another battery.", error_code="session_mismatch"
        )


async def start(
    db: AsyncSession, *, participant: ParticipantRef, session_in: SessionStart
) -> tuple[AssessmentSession, bool]:
    """Start, or resume when the client retries with the same session id (created: False)."""
    existing = await db.get(AssessmentSession, session_in.session_id)
    if existing is not None:
        _resumable(participant, session_in, existing)
        return existing, False
    battery = await db.get(Battery, session_in.battery_id)
    if (
        battery is None
        or battery.study_id != participant.study_id
        or battery.status != PublicationStatus.published
    ):
        raise Unprocessable(
            "No published battery with this id in your study.",
            details=[{"loc": ["body", "battery_id"], "msg": "unknown battery"}],
        )
    visit_id = None
    if session_in.visit_id is not None:
        visit_id = await schedules_service.visit_for_start(
            db, participant_id=participant.id, visit_id=session_in.visit_id, battery_id=battery.id
        )
    # A new session only under the consent in force (403 consent_required); a resumed one
    # (above) already started under consent.
    consent_record_id = await consent_service.require_consent(db, participant=participant)
    # ON CONFLICT: a device whose retry races its first attempt (or a sync batch beside a
    # start) inserts the same id twice at once. A plain INSERT waits for the other and then
    # fails on the primary key (a 500); this waits, inserts nothing, and resumes instead.
    inserted = await db.scalar(
        pg_insert(AssessmentSession)
        .values(
            id=session_in.session_id,
            participant_id=participant.id,
            study_id=participant.study_id,
            battery_id=battery.id,
            device=session_in.device,
            app_version=session_in.app_version,
            client_started_at=session_in.client_started_at,
            visit_occurrence_id=visit_id,
            consent_record_id=consent_record_id,
        )
        .on_conflict_do_nothing(index_elements=[AssessmentSession.id])
        .returning(AssessmentSession.id)
    )
    session = await db.get_one(AssessmentSession, session_in.session_id, populate_existing=True)
    if inserted is None:
        _resumable(participant, session_in, session)
        return session, False
    return session, True


async def end(
    db: AsyncSession, *, participant: ParticipantRef, end_in: SessionEnd
) -> tuple[AssessmentSession, bool]:
    """End a session. Returns (session, ended_now); False when it had already ended this way,
    so an offline replay can report the item as a duplicate rather than as stored."""
    # Locked: two ends at once (a retry racing its first attempt) take turns, so the second
    # sees the first's ending, and is a duplicate or a conflict, not a second "stored".
    session = await get_own(
        db, participant=participant, session_id=end_in.session_id, for_update=True
    )
    target = SessionStatus(end_in.status)
    if session.status == SessionStatus.in_progress:
        session.status = target
        session.client_ended_at = end_in.client_ended_at
        session.ended_at = clock.now()
        await db.flush()
        if target == SessionStatus.completed:
            await _complete_visit(db, session)
        # Its duration is known now: the data-quality checks run again (server.scoring).
        payload = {"session_id": str(session.id)}
        event = outbox.Event(outbox.SCORING_SESSION, payload, session.id, session.study_id)
        await outbox.add(db, [event])
        return session, True
    if session.status != target:
        # The same end sent twice is fine; a different ending is a real conflict.
        raise Conflict(
            f"This session already ended as {session.status.value}.", error_code="session_ended"
        )
    return session, False


async def _complete_visit(db: AsyncSession, session: AssessmentSession) -> None:
    """A completed session completes its visit when it ended inside the window. When it
    ended is the device's clock if it says so (an offline session syncs late), never later
    than the server saw the end."""
    ended_at = session.ended_at or clock.now()
    client = session.client_ended_at
    completed_at = client if client is not None and client <= ended_at else ended_at
    matched = await schedules_service.complete_from_session(
        db,
        participant_id=session.participant_id,
        battery_id=session.battery_id,
        session_id=session.id,
        visit_id=session.visit_occurrence_id,
        completed_at=completed_at,
    )
    if matched is not None and session.visit_occurrence_id is None:
        session.visit_occurrence_id = matched
        await db.flush()
