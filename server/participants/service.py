"""Participants and their (separately kept) contact details."""

from __future__ import annotations

import base64
import binascii
import uuid

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.core.errors import Conflict, NotFound, Unprocessable
from server.core.models import utcnow
from server.participants import contacts
from server.participants.models import Participant, ParticipantContact
from server.participants.schemas import ContactIn, ContactRead, ParticipantCreate, ParticipantUpdate
from server.studies.access import WHOLE_STUDY, SiteScope
from server.studies.models import Site

log = structlog.get_logger(__name__)


def encode_cursor(code: str) -> str:
    return base64.urlsafe_b64encode(code.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Unprocessable(
            "The cursor is not valid.",
            details=[{"loc": ["query", "cursor"], "msg": "not a cursor this API issued"}],
        ) from None


async def list_page(
    db: AsyncSession,
    *,
    study_id: uuid.UUID,
    scope: SiteScope,
    site_id: uuid.UUID | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Participant], str | None]:
    query = scope.filter(
        select(Participant).where(Participant.study_id == study_id), Participant.site_id
    )
    if site_id is not None:
        query = query.where(Participant.site_id == site_id)
    if cursor:
        query = query.where(Participant.participant_code > decode_cursor(cursor))
    rows = list(
        (await db.execute(query.order_by(Participant.participant_code).limit(limit + 1))).scalars()
    )
    next_cursor = encode_cursor(rows[limit - 1].participant_code) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def get_in_study(db: AsyncSession, participant_id: uuid.UUID) -> Participant:
    participant = await db.get(Participant, participant_id)
    if participant is None:
        raise NotFound("No such participant.")
    return participant


async def participant_of_study(
    db: AsyncSession, *, study_id: uuid.UUID, participant_id: uuid.UUID, scope: SiteScope
) -> Participant:
    """The participant, if one of the study's at a site scope covers (a list's filter, a
    preview's subject): to a site-scoped member, another site's is as unknown as another
    study's."""
    participant = await db.get(Participant, participant_id)
    if (
        participant is None
        or participant.study_id != study_id
        or not scope.covers(participant.site_id)
    ):
        raise NotFound("No such participant.")
    return participant


async def site_of_study(
    db: AsyncSession, *, study_id: uuid.UUID, site_id: uuid.UUID, scope: SiteScope
) -> Site:
    """The site, if it is one of the study's that scope covers: to a site-scoped member,
    another site is as unknown as another study's."""
    site = await db.get(Site, site_id)
    if site is None or site.study_id != study_id or not scope.covers(site.id):
        raise Unprocessable(
            "The site is not part of this study.",
            details=[{"loc": ["body", "site_id"], "msg": "no such site in this study"}],
        )
    return site


async def code_taken(db: AsyncSession, *, study_id: uuid.UUID, code: str) -> bool:
    found = await db.scalar(
        select(Participant.id).where(
            Participant.study_id == study_id, Participant.participant_code == code
        )
    )
    return found is not None


async def create(
    db: AsyncSession,
    *,
    study_id: uuid.UUID,
    participant_in: ParticipantCreate,
    settings: Settings,
    scope: SiteScope = WHOLE_STUDY,
) -> Participant:
    await site_of_study(db, study_id=study_id, site_id=participant_in.site_id, scope=scope)
    if await code_taken(db, study_id=study_id, code=participant_in.participant_code):
        raise Conflict(
            "This study already has a participant with this code.",
            error_code="participant_code_taken",
        )
    participant = Participant(
        study_id=study_id,
        site_id=participant_in.site_id,
        participant_code=participant_in.participant_code,
        timezone=participant_in.timezone,
        language=participant_in.language,
        status=participant_in.status,
        enrolled_at=participant_in.enrolled_at or utcnow(),
    )
    db.add(participant)
    await db.flush()
    if participant_in.contact is not None:
        # The contact is sealed with the key of these settings.
        await set_contact(db, settings, participant=participant, contact_in=participant_in.contact)
    log.info("participant_enrolled", participant_id=str(participant.id), study_id=str(study_id))
    return participant


async def update(
    db: AsyncSession,
    *,
    participant: Participant,
    participant_in: ParticipantUpdate,
    scope: SiteScope,
) -> Participant:
    if participant_in.site_id is not None:
        await site_of_study(
            db, study_id=participant.study_id, site_id=participant_in.site_id, scope=scope
        )
    for field, value in participant_in.model_dump(exclude_unset=True, exclude_none=True).items():
        setattr(participant, field, value)
    await db.flush()
    return participant


async def get_contact(
    db: AsyncSession, settings: Settings, *, participant: Participant
) -> ContactRead:
    contact = await db.get(ParticipantContact, participant.id)
    if contact is None:
        raise NotFound("No contact details are stored for this participant.")
    return _contact_read(contact, settings)


async def set_contact(
    db: AsyncSession, settings: Settings, *, participant: Participant, contact_in: ContactIn
) -> ContactRead:
    phone = None
    if contact_in.phone is not None:
        region = contact_in.phone_region or settings.DEFAULT_PHONE_REGION
        phone = contacts.normalise_phone(contact_in.phone, region)
    contact = await db.get(ParticipantContact, participant.id)
    if contact is None:
        contact = ParticipantContact(participant_id=participant.id)
        db.add(contact)
    push = contact_in.push_subscription
    contacts.write(
        contact,
        settings,
        email=None if contact_in.email is None else str(contact_in.email),
        phone=phone,
        push=None if push is None else push.model_dump(),
    )
    contact.email_opt_out = contact_in.email_opt_out
    contact.sms_opt_out = contact_in.sms_opt_out
    contact.push_opt_out = contact_in.push_opt_out
    contact.updated_at = utcnow()
    await db.flush()
    # The fields changed are named, never their values.
    log.info(
        "participant_contact_updated",
        participant_id=str(participant.id),
        fields=[k for k, v in contact_in.model_dump().items() if v not in (None, False)],
    )
    return _contact_read(contact, settings)


def _contact_read(contact: ParticipantContact, settings: Settings) -> ContactRead:
    details = contacts.read(contact, settings)
    return ContactRead(
        participant_id=contact.participant_id,
        email=details.email,
        phone=details.phone,
        has_push_subscription=details.push is not None,
        email_opt_out=contact.email_opt_out,
        sms_opt_out=contact.sms_opt_out,
        push_opt_out=contact.push_opt_out,
        updated_at=contact.updated_at,
    )
