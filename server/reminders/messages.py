"""Reminder messages as coordinators follow them: what went to whom (by participant code),
by which channel, and what became of it, with the provider's reason for a failure."""

from __future__ import annotations

import uuid

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.errors import NotFound
from server.participants.models import Participant
from server.reminders.models import (
    Channel,
    MessageStatus,
    ReminderMessage,
    ReminderRule,
    Trigger,
)
from server.reminders.schemas import MessageRead
from server.schedules.models import ScheduleVisit, VisitOccurrence
from server.studies.access import SiteScope


def _query() -> Select[ReminderMessage, str, str, Trigger]:
    # The participant's site now decides who sees a message, as it does for their visits.
    return (
        select(
            ReminderMessage, Participant.participant_code, ScheduleVisit.label, ReminderRule.trigger
        )
        .join(Participant, Participant.id == ReminderMessage.participant_id)
        .outerjoin(VisitOccurrence, VisitOccurrence.id == ReminderMessage.occurrence_id)
        .outerjoin(ScheduleVisit, ScheduleVisit.id == VisitOccurrence.visit_id)
        .outerjoin(ReminderRule, ReminderRule.id == ReminderMessage.rule_id)
    )


def _read(
    message: ReminderMessage, code: str, label: str | None, trigger: Trigger | None
) -> MessageRead:
    return MessageRead(
        id=message.id,
        study_id=message.study_id,
        participant_id=message.participant_id,
        participant_code=code,
        occurrence_id=message.occurrence_id,
        visit_label=label,
        rule_id=message.rule_id,
        trigger=trigger,
        channel=message.channel,
        kind=message.kind,
        status=message.status,
        attempts=message.attempts,
        provider=message.provider,
        error=message.error,
        moment=message.moment,
        send_at=message.send_at,
        sent_at=message.sent_at,
        created_at=message.created_at,
    )


async def list_messages(
    db: AsyncSession,
    *,
    study_id: uuid.UUID,
    scope: SiteScope,
    participant_id: uuid.UUID | None = None,
    status: MessageStatus | None = None,
    channel: Channel | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[MessageRead]:
    """The study's messages to participants of the sites scope covers, newest first."""
    query = _query().where(ReminderMessage.study_id == study_id)
    if scope.site_ids is not None:
        # SiteScope.filter's test, inline: it types a query of one entity only.
        query = query.where(Participant.site_id.in_(sorted(scope.site_ids)))
    if participant_id is not None:
        query = query.where(ReminderMessage.participant_id == participant_id)
    if status is not None:
        query = query.where(ReminderMessage.status == status)
    if channel is not None:
        query = query.where(ReminderMessage.channel == channel)
    query = query.order_by(ReminderMessage.created_at.desc(), ReminderMessage.id.desc())
    rows = (await db.execute(query.limit(limit).offset(offset))).all()
    return [_read(*row) for row in rows]


async def get(
    db: AsyncSession, message_id: uuid.UUID, *, lock: bool = False
) -> tuple[ReminderMessage, Participant]:
    """The message and its participant. lock: the message's row held until the transaction
    ends, so two resends of one message take turns (the second finds it queued: 409)."""
    query = (
        select(ReminderMessage, Participant)
        .join(Participant, Participant.id == ReminderMessage.participant_id)
        .where(ReminderMessage.id == message_id)
    )
    if lock:
        query = query.with_for_update(of=ReminderMessage).execution_options(populate_existing=True)
    row = (await db.execute(query)).first()
    if row is None:
        raise NotFound("No such message.")
    return row[0], row[1]


async def read(db: AsyncSession, message: ReminderMessage) -> MessageRead:
    row = (await db.execute(_query().where(ReminderMessage.id == message.id))).one()
    return _read(*row)
