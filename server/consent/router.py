"""Consent over HTTP: staff manage documents and see a participant's history (/api/consent);
the participant's own routes (/api/consent/me) take the participant token."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit import service as audit
from server.audit.models import AuditAction
from server.auth.deps import CurrentPrincipal
from server.consent import documents, pdf, service
from server.consent.deps import DocumentConfigurer, DocumentReader, RecordManager
from server.consent.models import ConsentDocument
from server.consent.schemas import (
    ConsentDocumentCreate,
    ConsentDocumentRead,
    ConsentDocumentUpdate,
    ConsentHistory,
    ConsentRecordRead,
    ConsentSign,
    ConsentStatus,
    WithdrawalIn,
    WithdrawalRead,
)
from server.core.db import DBSession
from server.core.errors import error_responses
from server.core.request_context import get_client_ip
from server.participant_auth.deps import CurrentParticipant
from server.participants.deps import ParticipantManager, ParticipantReader
from server.participants.models import ParticipantStatus
from server.participants.schemas import ParticipantRef
from server.studies.deps import StudyConfigurer, StudyReader
from server.studies.models import Study

router = APIRouter(prefix="/api/consent", tags=["consent"])
participant_router = APIRouter(prefix="/api/consent/me", tags=["consent"])


# --- staff ---------------------------------------------------------------------------------


@router.get("/documents", response_model=list[ConsentDocumentRead])
async def list_documents(access: StudyReader, db: DBSession) -> list[ConsentDocumentRead]:
    found = await documents.list_documents(db, study_id=access.study.id, scope=access.sites)
    return [ConsentDocumentRead.model_validate(d) for d in found]


@router.post("/documents", response_model=ConsentDocumentRead, status_code=status.HTTP_201_CREATED)
async def create_document(
    document_in: ConsentDocumentCreate,
    access: StudyConfigurer,
    db: DBSession,
    principal: CurrentPrincipal,
) -> ConsentDocumentRead:
    document = await documents.create_document(
        db,
        study_id=access.study.id,
        document_in=document_in,
        scope=access.sites,
        created_by=principal.user.id,
    )
    return ConsentDocumentRead.model_validate(document)


@router.get("/documents/{document_id}", response_model=ConsentDocumentRead)
async def get_document(access: DocumentReader) -> ConsentDocumentRead:
    return ConsentDocumentRead.model_validate(access.document)


@router.patch(
    "/documents/{document_id}",
    response_model=ConsentDocumentRead,
    responses=error_responses(409, s409="Published: a published version never changes"),
)
async def update_document(
    document_in: ConsentDocumentUpdate, access: DocumentConfigurer, db: DBSession
) -> ConsentDocumentRead:
    document = await documents.update_document(
        db, document=access.document, document_in=document_in
    )
    return ConsentDocumentRead.model_validate(document)


@router.post(
    "/documents/{document_id}/publish",
    response_model=ConsentDocumentRead,
    responses=error_responses(409, s409="Already published"),
)
async def publish_document(access: DocumentConfigurer, db: DBSession) -> ConsentDocumentRead:
    """Gives the next version of its track (study, site, language); from now on it is the
    version in force there, and if it requires re-consent, every participant's next session
    start asks for it."""
    return ConsentDocumentRead.model_validate(await documents.publish(db, document=access.document))


@router.get("/participants/{participant_id}", response_model=ConsentHistory)
async def participant_history(access: ParticipantReader, db: DBSession) -> ConsentHistory:
    participant = access.participant
    ref = ParticipantRef.model_validate(participant, from_attributes=True)
    return await _history(db, ref)


@router.post(
    "/participants/{participant_id}/withdraw",
    response_model=WithdrawalRead,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(409, s409="Already withdrawn"),
)
async def withdraw_on_behalf(
    withdrawal_in: WithdrawalIn,
    access: ParticipantManager,
    db: DBSession,
    principal: CurrentPrincipal,
) -> WithdrawalRead:
    withdrawal = await service.withdraw(
        db,
        participant_id=access.participant.id,
        withdrawal_in=withdrawal_in,
        by=principal.user.id,
    )
    return WithdrawalRead.model_validate(withdrawal)


@router.get(
    "/records/{record_id}/pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}, "description": "The signed record"}},
)
async def record_pdf(access: RecordManager, db: DBSession) -> Response:
    record, participant = access.record, access.participant
    document = await documents.get_document(db, record.document_id)
    study = await db.get_one(Study, participant.study_id)
    body = pdf.render(
        record=record,
        document=document,
        study_name=study.name,
        participant_code=participant.participant_code,
    )
    # It shows the typed name: every download is on the record, like a contact-details read.
    await audit.record(
        db,
        action=AuditAction.consent_pdf_read,
        object_type="consent_record",
        object_id=record.id,
        study_id=participant.study_id,
        site_id=participant.site_id,
        summary={"participant_id": str(participant.id), "version": record.document_version},
    )
    return Response(
        body,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="consent-{record.id}.pdf"'},
    )


# --- the participant, with their own token --------------------------------------------------


@participant_router.get("", response_model=ConsentStatus)
async def my_consent(me: CurrentParticipant, db: DBSession) -> ConsentStatus:
    """Whether consent is needed now, and the document to read and sign."""
    return await _status(db, me.participant)


@participant_router.post(
    "/sign",
    response_model=ConsentRecordRead,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(409, 422, s409="Not the document in force (details name it)"),
)
async def sign(sign_in: ConsentSign, me: CurrentParticipant, db: DBSession) -> ConsentRecordRead:
    record = await service.sign(db, participant=me.participant, sign_in=sign_in, ip=get_client_ip())
    return ConsentRecordRead.model_validate(record)


@participant_router.post(
    "/withdraw",
    response_model=WithdrawalRead,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(409, s409="Already withdrawn"),
)
async def withdraw(
    withdrawal_in: WithdrawalIn, me: CurrentParticipant, db: DBSession
) -> WithdrawalRead:
    """Ends the participant's consent: their logins end with it (this token answers 401 from
    now on), and the choice of what their data may still be used for is kept for exports."""
    withdrawal = await service.withdraw(
        db, participant_id=me.participant.id, withdrawal_in=withdrawal_in, by=None
    )
    return WithdrawalRead.model_validate(withdrawal)


async def _status(db: AsyncSession, participant: ParticipantRef) -> ConsentStatus:
    verdict = await service.verdict_for(db, participant=participant)
    document: ConsentDocument | None = None
    if verdict.in_force is not None:
        document = await documents.get_document(db, verdict.in_force.id)
    records = await service.records_of(db, participant_id=participant.id)
    return ConsentStatus(
        consent_required=not verdict.satisfied,
        document=None if document is None else ConsentDocumentRead.model_validate(document),
        latest_record=ConsentRecordRead.model_validate(records[-1]) if records else None,
        withdrawn=participant.status == ParticipantStatus.withdrawn,
    )


async def _history(db: AsyncSession, participant: ParticipantRef) -> ConsentHistory:
    records = await service.records_of(db, participant_id=participant.id)
    withdrawals = await service.withdrawals_of(db, participant_id=participant.id)
    return ConsentHistory(
        status=await _status(db, participant),
        records=[ConsentRecordRead.model_validate(r) for r in records],
        withdrawals=[WithdrawalRead.model_validate(w) for w in withdrawals],
    )
