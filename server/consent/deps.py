"""valid document and record ids: another study's, or another site's, answer 404."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from server.auth.deps import CurrentPrincipal
from server.consent import documents, service
from server.consent.models import ConsentDocument, ConsentRecord
from server.core.db import DBSession
from server.participants.models import Participant
from server.studies.access import Permission, StudyAccess, require_study_of


@dataclass(frozen=True)
class DocumentAccess:
    document: ConsentDocument
    study: StudyAccess


@dataclass(frozen=True)
class RecordAccess:
    record: ConsentRecord
    participant: Participant
    study: StudyAccess


def document_access(permission: str) -> Callable[..., Awaitable[DocumentAccess]]:
    async def dependency(
        document_id: uuid.UUID, db: DBSession, principal: CurrentPrincipal
    ) -> DocumentAccess:
        document = await documents.get_document(db, document_id)
        # A document of a site one's membership does not cover is as absent as another
        # study's; one of no site is the whole study's.
        access = await require_study_of(
            db,
            principal,
            document.study_id,
            permission,
            thing="consent document",
            site_id=document.site_id,
        )
        return DocumentAccess(document=document, study=access)

    return dependency


def record_access(permission: str) -> Callable[..., Awaitable[RecordAccess]]:
    async def dependency(
        record_id: uuid.UUID, db: DBSession, principal: CurrentPrincipal
    ) -> RecordAccess:
        record = await service.get_record(db, record_id)
        participant = await db.get_one(Participant, record.participant_id)
        access = await require_study_of(
            db,
            principal,
            participant.study_id,
            permission,
            thing="consent record",
            site_id=participant.site_id,
        )
        return RecordAccess(record=record, participant=participant, study=access)

    return dependency


DocumentReader = Annotated[DocumentAccess, Depends(document_access(Permission.READ))]
DocumentConfigurer = Annotated[DocumentAccess, Depends(document_access(Permission.CONFIGURE))]
# The PDF shows the typed name: coordinators only, like contact details.
RecordManager = Annotated[RecordAccess, Depends(record_access(Permission.MANAGE))]
