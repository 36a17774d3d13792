"""Reminders (notifications queue): the dispatch tick beat fires each minute, and the send of
one message per outbox row (topic `reminders.send`).

send_message is a door like exports': claim the row and prepare the message in one
transaction, call the provider with none open, record the outcome in a second. A transient
failure goes back to the outbox with a backoff (protocol.record_failure); a permanent one is
the message's `failed` with the provider's reason, and the row's dead letter.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core import clock
from server.core.config import Settings
from server.core.models import utcnow
from server.notifications.base import DeliveryError, PermanentDeliveryError
from server.notifications.registry import provider_for
from server.outbox import service as outbox
from server.reminders import dispatch as reminders_dispatch
from server.reminders import sending
from workers import protocol, runtime
from workers.app import task

log = structlog.stdlib.get_logger(__name__)


async def _dispatch() -> dict[str, object]:
    async with runtime.sessionmaker()() as db:
        result = await reminders_dispatch.tick(db, now=clock.now())
        await db.commit()
    return {k: v for k, v in asdict(result).items() if k != "through"}


@task()
def dispatch() -> dict[str, object]:
    """What fell due since the last tick: message rows and their outbox rows, once."""
    outcome = runtime.run(_dispatch)
    if outcome.get("found"):
        log.info("reminders_dispatched", **outcome)
    return outcome


async def _claim_and_send(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, event_id: uuid.UUID
) -> str:
    max_attempts = settings.TASK_MAX_RETRIES + 1
    try:
        async with sessionmaker() as db, db.begin():
            claimed = await outbox.claim(db, event_id, now=utcnow(), max_attempts=max_attempts)
            if isinstance(claimed, str):
                log.info("task_skipped", task=send_message.name, event_id=str(event_id),
                         reason=claimed)  # fmt: skip
                return "skipped"
            message_id = uuid.UUID(str(claimed.payload["message_id"]))
            prepared = await sending.prepare(
                db, settings, message_id=message_id, job_id=event_id, now=clock.now()
            )
    except Exception as exc:
        return await protocol.record_failure(
            sessionmaker, settings, event_id=event_id, task_name=send_message.name, exc=exc,
            attempts=None,
        )  # fmt: skip
    if prepared.outgoing is None:
        async with sessionmaker() as db, db.begin():
            await outbox.succeed(db, event_id, now=utcnow(), result_location=None)
        log.info("reminder_not_sent", event_id=str(event_id), outcome=prepared.outcome)
        return "succeeded"
    try:
        sent = await provider_for(prepared.outgoing.channel, settings).send(prepared.outgoing)
    except PermanentDeliveryError as exc:
        async with sessionmaker() as db, db.begin():
            await sending.record_failed(
                db, message_id=message_id, reason=exc.reason, now=clock.now(), final=True
            )
            await outbox.fail(db, event_id, error=exc.reason, now=utcnow())
        log.warning("reminder_failed", event_id=str(event_id), reason=exc.reason)
        return "failed"
    except Exception as exc:
        outcome = await protocol.record_failure(
            sessionmaker, settings, event_id=event_id, task_name=send_message.name, exc=exc,
            attempts=claimed.attempts,
        )  # fmt: skip
        reason = exc.reason if isinstance(exc, DeliveryError) else outbox.safe_error(exc)
        async with sessionmaker() as db, db.begin():
            await sending.record_failed(
                db, message_id=message_id, reason=reason, now=clock.now(),
                final=outcome == "failed",
            )  # fmt: skip
        return outcome
    async with sessionmaker() as db, db.begin():
        await sending.record_sent(db, message_id=message_id, sent=sent, now=clock.now())
        await outbox.succeed(db, event_id, now=utcnow(), result_location=None)
    log.info("reminder_sent", event_id=str(event_id), provider=sent.provider)
    return "succeeded"


@protocol.job_task()
def send_message(event_id: str) -> str:
    """Send one reminder message: its outbox row names it; the row's message id is inside."""
    return protocol.run_door(send_message, event_id, _claim_and_send)
