"""Sending a message again, by a coordinator's hand: one that failed, was skipped or was
cancelled goes back to the queue with a new job (its outbox row, in the same transaction)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.errors import Conflict
from server.outbox import service as outbox
from server.outbox.service import REMINDERS_SEND, Event
from server.participants.models import Participant, ParticipantStatus
from server.reminders.models import MessageStatus, ReminderMessage

RESENDABLE = (MessageStatus.failed, MessageStatus.skipped, MessageStatus.cancelled)


async def resend(db: AsyncSession, *, message: ReminderMessage, now: datetime) -> ReminderMessage:
    """Queued again to go now, with a new job. The caller holds the message's row locked
    (server.reminders.messages.get(lock=True)), so two resends at once make one job.

    Raises Conflict: message_not_resendable (queued, in flight, or already sent), or
    participant_withdrawn (nothing goes to a withdrawn participant)."""
    if message.status not in RESENDABLE:
        raise Conflict(
            f"A {message.status.value} message cannot be sent again; only a failed, skipped "
            "or cancelled one.",
            error_code="message_not_resendable",
        )
    status = await db.scalar(
        select(Participant.status).where(Participant.id == message.participant_id)
    )
    if status == ParticipantStatus.withdrawn:
        raise Conflict(
            "The participant has withdrawn: no message goes to them.",
            error_code="participant_withdrawn",
        )
    job_id = uuid.uuid4()
    message.status = MessageStatus.queued
    message.error = None
    message.send_at = now
    message.job_id = job_id
    message.updated_at = now
    await db.flush()
    await outbox.add(
        db,
        [
            Event(
                topic=REMINDERS_SEND,
                payload={"message_id": str(message.id)},
                subject_id=message.participant_id,
                study_id=message.study_id,
                id=job_id,
                due_at=now,
            )
        ],
    )
    return message
