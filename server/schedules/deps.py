"""A protocol of a study you are not in, or a visit of a participant at a site your
membership does not cover, answers 404 like the study or participant would."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from server.auth.deps import CurrentPrincipal
from server.core.db import DBSession
from server.participants import service as participants_service
from server.schedules import protocols, service
from server.schedules.models import ScheduleProtocol, VisitOccurrence
from server.studies.access import Permission, StudyAccess, require_study_of


@dataclass(frozen=True)
class ProtocolAccess:
    protocol: ScheduleProtocol
    study: StudyAccess


@dataclass(frozen=True)
class VisitAccess:
    occurrence: VisitOccurrence
    study: StudyAccess


def protocol_access(permission: str) -> Callable[..., Awaitable[ProtocolAccess]]:
    async def dependency(
        protocol_id: uuid.UUID, db: DBSession, principal: CurrentPrincipal
    ) -> ProtocolAccess:
        protocol = await protocols.get(db, protocol_id)
        access = await require_study_of(
            db, principal, protocol.study_id, permission, thing="protocol"
        )
        return ProtocolAccess(protocol=protocol, study=access)

    return dependency


def visit_access(permission: str) -> Callable[..., Awaitable[VisitAccess]]:
    async def dependency(
        visit_id: uuid.UUID, db: DBSession, principal: CurrentPrincipal
    ) -> VisitAccess:
        # Locked: two overrides of one visit at once take turns.
        occurrence = await service.get_occurrence(db, visit_id, lock=True)
        # The participant's site now, not when the row was written: a move takes its visits.
        participant = await participants_service.get_in_study(db, occurrence.participant_id)
        access = await require_study_of(
            db,
            principal,
            participant.study_id,
            permission,
            thing="visit",
            site_id=participant.site_id,
        )
        return VisitAccess(occurrence=occurrence, study=access)

    return dependency


ProtocolReader = Annotated[ProtocolAccess, Depends(protocol_access(Permission.READ))]
# A protocol is the whole study's: configuration, never a site-scoped member's.
ProtocolManager = Annotated[ProtocolAccess, Depends(protocol_access(Permission.CONFIGURE))]
# Overriding a visit is managing a participant: a site-scoped coordinator may, on their sites.
VisitManager = Annotated[VisitAccess, Depends(visit_access(Permission.MANAGE))]
