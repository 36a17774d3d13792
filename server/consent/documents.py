"""A study's consent documents, for its staff: drafts, edits, publication. Never commits.

Publishing gives a draft the next version number of its track (study, site, language) and
freezes it; which published version is in force for whom is server.consent.rules'."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit import service as audit
from server.audit.models import AuditAction
from server.consent.models import ConsentDocument
from server.consent.schemas import ConsentDocumentCreate, ConsentDocumentUpdate
from server.core.catalogue import PublicationStatus
from server.core.errors import Conflict, NotFound
from server.core.models import utcnow
from server.participants import service as participants_service
from server.studies.access import SiteScope
from server.studies.models import Study


async def list_documents(
    db: AsyncSession, *, study_id: uuid.UUID, scope: SiteScope
) -> Sequence[ConsentDocument]:
    query = select(ConsentDocument).where(ConsentDocument.study_id == study_id)
    query = scope.filter(query, ConsentDocument.site_id, study_wide_too=True)
    return (await db.scalars(query.order_by(ConsentDocument.created_at, ConsentDocument.id))).all()


async def get_document(db: AsyncSession, document_id: uuid.UUID) -> ConsentDocument:
    document = await db.get(ConsentDocument, document_id)
    if document is None:
        raise NotFound("No such consent document.")
    return document


async def create_document(
    db: AsyncSession,
    *,
    study_id: uuid.UUID,
    document_in: ConsentDocumentCreate,
    scope: SiteScope,
    created_by: uuid.UUID | None,
) -> ConsentDocument:
    if document_in.site_id is not None:
        await participants_service.site_of_study(
            db, study_id=study_id, site_id=document_in.site_id, scope=scope
        )
    document = ConsentDocument(study_id=study_id, created_by=created_by, **document_in.model_dump())
    db.add(document)
    await db.flush()
    await _record_document(db, AuditAction.consent_document_created, document)
    return document


def _draft_only(document: ConsentDocument) -> None:
    if document.status == PublicationStatus.published:
        raise Conflict(
            f"Version {document.version} of this consent document is published and never "
            "changes; create a new document for a new version.",
            error_code="consent_document_published",
        )


async def update_document(
    db: AsyncSession, *, document: ConsentDocument, document_in: ConsentDocumentUpdate
) -> ConsentDocument:
    changes = document_in.model_dump(exclude_unset=True, exclude_none=True)
    if not changes:
        return document
    _draft_only(document)
    for field, value in changes.items():
        setattr(document, field, value)
    await db.flush()
    await _record_document(db, AuditAction.consent_document_updated, document, sorted(changes))
    return document


async def publish(db: AsyncSession, *, document: ConsentDocument) -> ConsentDocument:
    _draft_only(document)
    # The study's row lock: two publications in one study take turns for the next number.
    await db.execute(select(Study.id).where(Study.id == document.study_id).with_for_update())
    latest = await db.scalar(
        select(func.max(ConsentDocument.version)).where(
            ConsentDocument.study_id == document.study_id,
            ConsentDocument.site_id.is_(None)
            if document.site_id is None
            else ConsentDocument.site_id == document.site_id,
            ConsentDocument.language.is_(None)
            if document.language is None
            else ConsentDocument.language == document.language,
        )
    )
    document.version = (latest or 0) + 1
    document.status = PublicationStatus.published
    document.published_at = utcnow()
    await db.flush()
    await _record_document(db, AuditAction.consent_document_published, document)
    return document


async def _record_document(
    db: AsyncSession,
    action: AuditAction,
    document: ConsentDocument,
    fields: list[str] | None = None,
) -> None:
    summary: dict[str, object] = {
        "version": document.version,
        "language": document.language,
        "requires_reconsent": document.requires_reconsent,
    }
    if fields is not None:
        summary["fields"] = fields
    await audit.record(
        db,
        action=action,
        object_type="consent_document",
        object_id=document.id,
        study_id=document.study_id,
        site_id=document.site_id,
        summary=summary,
    )
