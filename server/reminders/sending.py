"""Sending one message: prepare it inside a transaction, send with none open, record after.

prepare() runs in the transaction that claims the message's outbox row: it takes the message
row (FOR UPDATE SKIP LOCKED), decides whether it still goes (withdrawn, opted out, visit done,
superseded by a resend), reads and decrypts the one address it needs, renders the template
and marks the message sending. The caller commits, calls the provider, and records the
outcome in a second transaction (record_sent, record_failed, record_retrying). The address
lives in the returned Outgoing only: never in task arguments, rows other than its own
encrypted one, or logs.

A run that died mid-send leaves the message `sending`; its outbox row comes back through the
relay (its run lock is free) and the next run sends again. Between the provider accepting and
record_sent committing the outcome is unknown; the resend then carries the same Message-ID,
so the receiving side can recognise it. Everywhere else it is sent once.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.message_templates import render as templates
from server.message_templates import service as templates_service
from server.message_templates.models import TemplateKind
from server.notifications.base import Outgoing, Sent, TransientDeliveryError
from server.participants import contacts
from server.participants.models import Participant, ParticipantContact, ParticipantStatus
from server.reminders.models import (
    FINAL,
    Channel,
    MessageKind,
    MessageStatus,
    ReminderMessage,
    ReminderRule,
)
from server.schedules.models import PENDING, ScheduleVisit, VisitOccurrence
from server.studies.models import Study

_TEMPLATE = {
    MessageKind.reminder: TemplateKind.reminder,
    MessageKind.escalation: TemplateKind.reminder,
    MessageKind.missed_visit: TemplateKind.missed_visit,
}
_OPT_OUT = {
    Channel.email: "email_opt_out",
    Channel.sms: "sms_opt_out",
    Channel.push: "push_opt_out",
}


@dataclass(frozen=True)
class Prepared:
    """What to send (outgoing), or why nothing is sent (outcome)."""

    outgoing: Outgoing | None = None
    outcome: str | None = None


async def _message(db: AsyncSession, message_id: uuid.UUID) -> ReminderMessage | None:
    found = await db.scalar(
        select(ReminderMessage)
        .where(ReminderMessage.id == message_id)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    if found is None and await db.get(ReminderMessage, message_id) is not None:
        # Another run holds it this moment (a resend racing a retry): try again shortly.
        raise TransientDeliveryError("The message is being handled by another run.")
    return found


def _cancel(message: ReminderMessage, reason: str, now: datetime) -> Prepared:
    message.status = MessageStatus.cancelled
    message.error = reason
    message.updated_at = now
    return Prepared(outcome="cancelled")


async def prepare(
    db: AsyncSession, settings: Settings, *, message_id: uuid.UUID, job_id: uuid.UUID,
    now: datetime,
) -> Prepared:  # fmt: skip
    message = await _message(db, message_id)
    if message is None:
        return Prepared(outcome="gone")
    if message.job_id != job_id:
        return Prepared(outcome="superseded")  # a resend made a newer job for it
    if message.status in FINAL:
        return Prepared(outcome=str(message.status))
    participant = await db.get(Participant, message.participant_id)
    occurrence = await db.get(VisitOccurrence, message.occurrence_id)
    if participant is None or occurrence is None:
        return _cancel(message, "The participant or the visit no longer exists.", now)
    if participant.status == ParticipantStatus.withdrawn:
        return _cancel(message, "The participant withdrew.", now)
    if message.kind != MessageKind.missed_visit and occurrence.status not in PENDING:
        return _cancel(message, f"The visit is {occurrence.status.value}.", now)
    contact = await db.get(ParticipantContact, participant.id)
    channel = Channel(message.channel)
    if contact is None or getattr(contact, _OPT_OUT[channel]):
        return _cancel(message, f"The participant opted out of {channel.value}.", now)
    details = contacts.read(contact, settings)
    to = {
        Channel.email: details.email,
        Channel.sms: details.phone,
        Channel.push: None if details.push is None else json.dumps(details.push),
    }[channel]
    if to is None:
        return _cancel(message, f"No {channel.value} contact is on file.", now)
    outgoing = await _render(db, settings, message, participant, occurrence, channel, to)
    message.status = MessageStatus.sending
    message.attempts += 1
    message.updated_at = now
    return Prepared(outgoing=outgoing)


async def _render(
    db: AsyncSession,
    settings: Settings,
    message: ReminderMessage,
    participant: Participant,
    occurrence: VisitOccurrence,
    channel: Channel,
    to: str,
) -> Outgoing:
    kind = _TEMPLATE[MessageKind(message.kind)]
    study = await db.get(Study, participant.study_id)
    visit = await db.get(ScheduleVisit, occurrence.visit_id)
    subject, body = await templates_service.template_for(
        db, study_id=participant.study_id, kind=kind, language=participant.language
    )
    context = templates.context_for(
        participant_code=participant.participant_code,
        study_name=study.name if study is not None else "",
        app_link=settings.PARTICIPANT_APP_URL,
        timezone=participant.timezone,
        window_start=occurrence.window_start,
        window_end=occurrence.window_end,
        language=participant.language,
        visit_label=visit.label if visit is not None else "",
    )
    allowed = templates.PLACEHOLDERS[kind]
    rendered = templates.render(
        kind, subject, body, {k: v for k, v in context.items() if k in allowed}
    )
    return Outgoing(message.id, channel.value, to, rendered.subject, rendered.body)


async def _locked(db: AsyncSession, message_id: uuid.UUID) -> ReminderMessage | None:
    return await db.get(ReminderMessage, message_id, with_for_update=True, populate_existing=True)


async def record_sent(
    db: AsyncSession, *, message_id: uuid.UUID, sent: Sent, now: datetime
) -> None:
    message = await _locked(db, message_id)
    if message is None:
        return
    message.status = MessageStatus.sent
    message.provider = sent.provider
    message.provider_message_id = sent.provider_message_id
    message.error = None
    message.sent_at = now
    message.updated_at = now
    if message.channel == Channel.email and message.kind != MessageKind.escalation:
        rule = await db.get(ReminderRule, message.rule_id)
        if rule is not None and rule.escalate_to_sms_after_hours:
            # Picked up by the dispatch when due, if the visit is still pending then.
            message.escalate_at = now + timedelta(hours=rule.escalate_to_sms_after_hours)


async def record_failed(
    db: AsyncSession, *, message_id: uuid.UUID, reason: str, now: datetime, final: bool
) -> None:
    """The provider's reason; final: failed for good, else retrying after a backoff."""
    message = await _locked(db, message_id)
    if message is None or message.status in FINAL:
        return
    message.status = MessageStatus.failed if final else MessageStatus.retrying
    message.error = reason
    message.updated_at = now
