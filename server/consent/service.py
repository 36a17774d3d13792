"""Consent documents, signatures and withdrawals. Never commits; records its audit entries.

The gate (require_consent) is called by server.assessment_sessions.service.start for every
new session, online or replayed from an offline queue (server.sync), so both are refused
alike: a queued session_start is rejected as an item (consent_required), the device keeps it
and sends it again once the participant has signed. Nothing is thrown away, and the session
then names the signature it ran under (assessment_sessions.consent_record_id): one whose
client_started_at precedes that record's signed_at was run before consent, which an export
can tell.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit import service as audit
from server.audit.models import AuditAction
from server.consent import rules
from server.consent.models import ConsentDocument, ConsentRecord, ConsentWithdrawal, DataUse
from server.consent.schemas import ConsentSign, WithdrawalIn
from server.core import clock
from server.core.catalogue import PublicationStatus
from server.core.errors import Conflict, Forbidden, NotFound, Unprocessable
from server.participants.models import Participant, ParticipantStatus
from server.participants.schemas import ParticipantRef
from server.schedules import service as schedules_service

# --- the participant's state and the gate ----------------------------------------------------


async def verdict_for(db: AsyncSession, *, participant: ParticipantRef) -> rules.Verdict:
    docs = [
        rules.PublishedDoc(id=i, site_id=s, language=lang, version=v or 0, requires_reconsent=r)
        for i, s, lang, v, r in await db.execute(
            select(
                ConsentDocument.id,
                ConsentDocument.site_id,
                ConsentDocument.language,
                ConsentDocument.version,
                ConsentDocument.requires_reconsent,
            ).where(
                ConsentDocument.study_id == participant.study_id,
                ConsentDocument.status == PublicationStatus.published,
            )
        )
    ]
    if not docs:  # no gate: one query for studies without consent documents
        return rules.verdict([], [], site_id=participant.site_id, language=None)
    # Not on the participant token's ParticipantRef: only the consent gate needs it.
    language = await db.scalar(select(Participant.language).where(Participant.id == participant.id))
    signed = [
        rules.Signed(record_id=r, document_id=d)
        for r, d in await db.execute(
            select(ConsentRecord.id, ConsentRecord.document_id)
            .where(ConsentRecord.participant_id == participant.id)
            .order_by(ConsentRecord.signed_at, ConsentRecord.id)
        )
    ]
    return rules.verdict(docs, signed, site_id=participant.site_id, language=language)


async def require_consent(db: AsyncSession, *, participant: ParticipantRef) -> uuid.UUID | None:
    """The record that covers the document in force (None: the study has no documents), or
    403 consent_required."""
    verdict = await verdict_for(db, participant=participant)
    if verdict.satisfied:
        return verdict.covered_by
    if verdict.in_force is None:
        message = (
            "This study needs your consent before any session, but has no consent document "
            "for your site and language yet. Please contact your study team."
        )
    else:
        message = (
            "Please read and sign the study's consent document (GET /api/consent/me, then "
            "POST /api/consent/me/sign) before starting a session."
        )
    document_id = None if verdict.in_force is None else str(verdict.in_force.id)
    version = None if verdict.in_force is None else verdict.in_force.version
    raise Forbidden(
        message,
        error_code="consent_required",
        details={"document_id": document_id, "version": version},
    )


async def records_of(db: AsyncSession, *, participant_id: uuid.UUID) -> Sequence[ConsentRecord]:
    return (
        await db.scalars(
            select(ConsentRecord)
            .where(ConsentRecord.participant_id == participant_id)
            .order_by(ConsentRecord.signed_at, ConsentRecord.id)
        )
    ).all()


async def withdrawals_of(
    db: AsyncSession, *, participant_id: uuid.UUID
) -> Sequence[ConsentWithdrawal]:
    """Oldest first; the last one's data_use is what exports honour."""
    return (
        await db.scalars(
            select(ConsentWithdrawal)
            .where(ConsentWithdrawal.participant_id == participant_id)
            .order_by(ConsentWithdrawal.withdrawn_at, ConsentWithdrawal.id)
        )
    ).all()


async def data_use_of(
    db: AsyncSession, *, study_id: uuid.UUID
) -> dict[uuid.UUID, tuple[DataUse, datetime]]:
    """For exports: each withdrawn participant's choice and time, from their latest withdrawal
    (until_withdrawal: only data received before that time; none: nothing). A participant not
    here never withdrew. Re-enrolled participants (status changed back by staff) are still
    listed: an export decides with their status whether a later consent supersedes it."""
    rows = await db.execute(
        select(
            ConsentWithdrawal.participant_id,
            ConsentWithdrawal.data_use,
            ConsentWithdrawal.withdrawn_at,
        )
        .where(ConsentWithdrawal.study_id == study_id)
        .order_by(
            ConsentWithdrawal.participant_id,
            ConsentWithdrawal.withdrawn_at.desc(),
            ConsentWithdrawal.id.desc(),
        )
        .ext(distinct_on(ConsentWithdrawal.participant_id))
    )
    return {participant_id: (use, at) for participant_id, use, at in rows}


async def get_record(db: AsyncSession, record_id: uuid.UUID) -> ConsentRecord:
    record = await db.get(ConsentRecord, record_id)
    if record is None:
        raise NotFound("No such consent record.")
    return record


# --- signing and withdrawing -----------------------------------------------------------------


async def sign(
    db: AsyncSession, *, participant: ParticipantRef, sign_in: ConsentSign, ip: str | None
) -> ConsentRecord:
    verdict = await verdict_for(db, participant=participant)
    current = verdict.in_force
    if current is None:
        raise Unprocessable(
            "There is no consent document for you to sign in this study.",
            error_code="no_consent_document",
        )
    if sign_in.document_id != current.id:
        raise Conflict(
            "This is not the consent document in force; fetch GET /api/consent/me again.",
            error_code="consent_document_not_in_force",
            details={"document_id": str(current.id), "version": current.version},
        )
    record = ConsentRecord(
        participant_id=participant.id,
        study_id=participant.study_id,
        document_id=current.id,
        document_version=current.version,
        attestation_kind=sign_in.attestation.kind,
        attestation=sign_in.attestation.value,
        ip_address=ip,
        app_version=sign_in.app_version,
    )
    db.add(record)
    await db.flush()
    await audit.record(
        db,
        action=AuditAction.consent_signed,
        object_type="consent_record",
        object_id=record.id,
        study_id=participant.study_id,
        site_id=participant.site_id,
        # Which version and how, never the typed name.
        summary={
            "participant_id": str(participant.id),
            "document_id": str(current.id),
            "version": current.version,
            "attestation_kind": record.attestation_kind.value,
        },
    )
    return record


async def withdraw(
    db: AsyncSession,
    *,
    participant_id: uuid.UUID,
    withdrawal_in: WithdrawalIn,
    by: uuid.UUID | None,
) -> ConsentWithdrawal:
    """The participant withdraws (by None) or a staff member for them: recorded with the
    reason and the data-use choice; the participant becomes withdrawn, which ends their
    logins (server.participant_auth) and so every session, submission and sync after it."""
    # Locked: a withdrawal racing another (or a status change) takes its turn.
    participant = await db.get(
        Participant, participant_id, with_for_update=True, populate_existing=True
    )
    if participant is None:
        raise NotFound("No such participant.")
    if participant.status == ParticipantStatus.withdrawn:
        raise Conflict("This participant has already withdrawn.", error_code="already_withdrawn")
    at = clock.now()
    withdrawal = ConsentWithdrawal(
        participant_id=participant.id,
        study_id=participant.study_id,
        withdrawn_at=at,
        withdrawn_by=by,
        reason=withdrawal_in.reason,
        data_use=withdrawal_in.data_use,
        previous_status=participant.status.value,
    )
    db.add(withdrawal)
    participant.status = ParticipantStatus.withdrawn
    await db.flush()
    # Future visits are cancelled; past ones keep their status (completed, missed).
    cancelled = await schedules_service.cancel_future_visits(
        db, participant_id=participant.id, at=at, reason="withdrawn"
    )
    # Reminders: none exist yet; whatever sends them must skip withdrawn participants.
    await audit.record(
        db,
        action=AuditAction.consent_withdrawn,
        object_type="participant",
        object_id=participant.id,
        study_id=participant.study_id,
        site_id=participant.site_id,
        # The reason is free text (it may name people): kept on the row, not in the trail.
        summary={
            "by": "participant" if by is None else "staff",
            "data_use": withdrawal.data_use.value,
            "visits_cancelled": cancelled,
            "status": {"from": withdrawal.previous_status, "to": ParticipantStatus.withdrawn.value},
        },
    )
    return withdrawal
