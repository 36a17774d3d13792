"""/api/schedules: protocols (staff), participants' visits and overrides (staff, site-scoped),
and /me, the participant app's own schedule."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit import service as audit
from server.audit.models import AuditAction
from server.core import clock
from server.core.db import DBSession
from server.participant_auth.deps import CurrentParticipant
from server.participants.deps import ParticipantManager, ParticipantReader
from server.schedules import protocols, service, sweep
from server.schedules.deps import ProtocolManager, ProtocolReader, VisitAccess, VisitManager
from server.schedules.models import VisitOccurrence
from server.schedules.schemas import (
    AnchorIn,
    MoveIn,
    MySchedule,
    OccurrenceRead,
    OverrideIn,
    ProtocolCreate,
    ProtocolPublish,
    ProtocolRead,
    ProtocolUpdate,
    ReopenIn,
)
from server.studies.deps import StudyConfigurer, StudyReader

router = APIRouter(prefix="/api/schedules", tags=["schedules"])


@router.get("/me", response_model=MySchedule)
async def my_schedule(me: CurrentParticipant, db: DBSession) -> MySchedule:
    """Your visits open now, and the next ones (participant token)."""
    return await service.my_schedule(db, participant_id=me.participant.id)


@router.get("/protocols", response_model=list[ProtocolRead])
async def list_protocols(access: StudyReader, db: DBSession) -> list[ProtocolRead]:
    return await protocols.list_protocols(db, study_id=access.study.id)


@router.post("/protocols", response_model=ProtocolRead, status_code=status.HTTP_201_CREATED)
async def create_protocol(
    protocol_in: ProtocolCreate, access: StudyConfigurer, db: DBSession
) -> ProtocolRead:
    return await protocols.create(db, study_id=access.study.id, protocol_in=protocol_in)


@router.get("/protocols/{protocol_id}", response_model=ProtocolRead)
async def get_protocol(access: ProtocolReader, db: DBSession) -> ProtocolRead:
    visits = await protocols.visits_of(db, [access.protocol.id])
    return protocols.read(access.protocol, visits[access.protocol.id])


@router.patch("/protocols/{protocol_id}", response_model=ProtocolRead)
async def update_protocol(
    protocol_in: ProtocolUpdate, access: ProtocolManager, db: DBSession
) -> ProtocolRead:
    return await protocols.update(db, protocol=access.protocol, protocol_in=protocol_in)


@router.post("/protocols/{protocol_id}/publish", response_model=ProtocolRead)
async def publish_protocol(
    publish_in: ProtocolPublish, access: ProtocolManager, db: DBSession
) -> ProtocolRead:
    """Publish this version: the next sweep gives it to the participants it applies to."""
    published = await protocols.publish(db, protocol=access.protocol, publish_in=publish_in)
    await audit.record(
        db,
        action=AuditAction.schedule_protocol_published,
        object_type="schedule_protocol",
        object_id=published.id,
        study_id=published.study_id,
        summary={
            "version": published.version,
            "applies_to": published.applies_to.value,
            "effective_from": published.effective_from.isoformat()
            if published.effective_from
            else None,
            "visits": len(published.visits),
        },
    )
    return published


@router.get("/participants/{participant_id}", response_model=list[OccurrenceRead])
async def participant_schedule(access: ParticipantReader, db: DBSession) -> list[OccurrenceRead]:
    return await service.participant_schedule(db, participant_id=access.participant.id)


@router.put("/participants/{participant_id}/anchor", response_model=list[OccurrenceRead])
async def set_anchor(
    anchor_in: AnchorIn, access: ParticipantManager, db: DBSession
) -> list[OccurrenceRead]:
    """A new enrolment anchor (a local date): visits not yet open move; past ones stay."""
    participant = access.participant
    moved = await sweep.recompute_future(
        db, participant_id=participant.id, now=clock.now(), anchor_date=anchor_in.anchor_date
    )
    await audit.record(
        db,
        action=AuditAction.schedule_anchor_changed,
        object_type="participant",
        object_id=participant.id,
        study_id=participant.study_id,
        site_id=participant.site_id,
        summary={
            "anchor_date": anchor_in.anchor_date.isoformat(),
            "moved": moved,
            "reason": anchor_in.reason,
        },
    )
    return await service.participant_schedule(db, participant_id=participant.id)


async def _overridden(
    db: AsyncSession, access: VisitAccess, occurrence: VisitOccurrence, kind: str, reason: str
) -> OccurrenceRead:
    await audit.record(
        db,
        action=AuditAction.schedule_visit_overridden,
        object_type="visit_occurrence",
        object_id=occurrence.id,
        study_id=access.study.study.id,
        site_id=occurrence.site_id,
        summary={
            "override": kind,
            "participant_id": str(occurrence.participant_id),
            "status": occurrence.status.value,
            "window_start": occurrence.window_start.isoformat(),
            "window_end": occurrence.window_end.isoformat(),
            "reason": reason,
        },
    )
    return await service.read_one(db, occurrence)


@router.post("/visits/{visit_id}/move", response_model=OccurrenceRead)
async def move_visit(move_in: MoveIn, access: VisitManager, db: DBSession) -> OccurrenceRead:
    occurrence = await service.move(db, occurrence=access.occurrence, move_in=move_in)
    return await _overridden(db, access, occurrence, "move", move_in.reason)


@router.post("/visits/{visit_id}/skip", response_model=OccurrenceRead)
async def skip_visit(skip_in: OverrideIn, access: VisitManager, db: DBSession) -> OccurrenceRead:
    occurrence = await service.skip(db, occurrence=access.occurrence, reason=skip_in.reason)
    return await _overridden(db, access, occurrence, "skip", skip_in.reason)


@router.post("/visits/{visit_id}/reopen", response_model=OccurrenceRead)
async def reopen_visit(reopen_in: ReopenIn, access: VisitManager, db: DBSession) -> OccurrenceRead:
    occurrence = await service.reopen(db, occurrence=access.occurrence, reopen_in=reopen_in)
    return await _overridden(db, access, occurrence, "reopen", reopen_in.reason)
