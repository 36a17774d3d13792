"""Consent documents and signatures for tests: they flush, never commit."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from server.consent.models import AttestationKind, ConsentDocument, ConsentRecord
from server.core.catalogue import PublicationStatus
from server.core.models import utcnow
from server.participants.models import Participant
from server.studies.models import Site, Study


async def create_document(
    db: AsyncSession,
    study: Study,
    *,
    site: Site | None = None,
    language: str | None = None,
    version: int | None = 1,
    requires_reconsent: bool = True,
    body: str = "You agree to take part in this study.",
) -> ConsentDocument:
    """Published (version given) or a draft (version None)."""
    document = ConsentDocument(
        study_id=study.id,
        site_id=None if site is None else site.id,
        language=language,
        version=version,
        title="Consent to take part",
        body=body,
        requires_reconsent=requires_reconsent,
        status=PublicationStatus.draft if version is None else PublicationStatus.published,
        published_at=None if version is None else utcnow(),
    )
    db.add(document)
    await db.flush()
    return document


async def sign(
    db: AsyncSession, participant: Participant, document: ConsentDocument
) -> ConsentRecord:
    assert document.version is not None
    record = ConsentRecord(
        participant_id=participant.id,
        study_id=participant.study_id,
        document_id=document.id,
        document_version=document.version,
        attestation_kind=AttestationKind.typed_name,
        attestation="Ada Lovelace",
        app_version="1.0",
    )
    db.add(record)
    await db.flush()
    return record
