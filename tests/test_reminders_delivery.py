"""Reminders end to end with real processes (tests.e2e): the dispatch tick, the relay, Celery
workers on the notifications queue and a real SMTP server (tests.smtp_sink, aiosmtpd).

A worker killed mid-send: the message is neither lost nor sent twice. An SMTP server that
refuses: the provider's reason on the message, then the retry. Withdrawal and opt-out: nothing
is sent. What reaches the SMTP server holds the address and what the template shows, nothing
else; no process logs an address or a number.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from server.consent import service as consent_service
from server.consent.models import DataUse
from server.consent.schemas import WithdrawalIn
from server.outbox.models import JobStatus, OutboxEvent
from server.participants.models import ParticipantContact
from server.reminders import dispatch, resend
from server.reminders.models import ReminderMessage
from tests.e2e.stack import Stack, open_stack
from tests.reminder_seed import Seeded, seed
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.slow

LEASE_S = 6


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with open_stack(tmp_path) as stack:
        yield stack


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


def _env(smtp: SmtpSink) -> dict[str, object]:
    return {
        "EMAIL_PROVIDER": "smtp", "SMTP_HOST": smtp.host, "SMTP_PORT": smtp.port,
        "OUTBOX_LEASE_SECONDS": LEASE_S, "PARTICIPANT_APP_URL": "https://app.example.org/",
    }  # fmt: skip


async def _seed_and_dispatch(stack: Stack, n: int) -> Seeded:
    now = datetime.now(UTC)
    seeded = await seed(stack.sessions, stack.settings, n=n, now=now)
    async with stack.sessions() as db, db.begin():
        result = await dispatch.tick(db, now=now)
    assert result.queued == n
    return seeded


async def _messages(stack: Stack, seeded: Seeded) -> list[ReminderMessage]:
    async with stack.sessions() as db:
        rows = await db.scalars(
            select(ReminderMessage)
            .where(ReminderMessage.study_id == seeded.study_id)
            .order_by(ReminderMessage.created_at, ReminderMessage.id)
        )
        return list(rows)


async def _jobs_finished(stack: Stack, seeded: Seeded) -> bool:
    async with stack.sessions() as db:
        jobs = await db.scalars(
            select(OutboxEvent).where(
                OutboxEvent.study_id == seeded.study_id, OutboxEvent.topic == "reminders.send"
            )
        )
        return all(job.finished_at is not None for job in jobs)


async def test_a_worker_killed_mid_send_neither_loses_nor_doubles_the_message(
    stack: Stack, smtp: SmtpSink
) -> None:
    seeded = await _seed_and_dispatch(stack, 1)
    smtp.hold()
    stack.start_relay(OUTBOX_LEASE_SECONDS=LEASE_S)
    first = await stack.start_worker("first", **_env(smtp))
    await stack.wait_for(lambda: smtp.held_count() == 1, timeout=30, what="the send in progress")
    first.kill()
    (message,) = await _messages(stack, seeded)
    assert (message.status, message.attempts) == ("sending", 1)
    smtp.release()

    await stack.start_worker("second", **_env(smtp))

    async def sent() -> bool:
        (message,) = await _messages(stack, seeded)
        return message.status == "sent"

    await stack.wait_for(sent, timeout=LEASE_S + 40, what="the message after the kill")
    smtp.wait_for(1)
    (message,) = await _messages(stack, seeded)
    assert message.attempts == 2
    assert len(smtp.messages) == 1
    assert smtp.messages[0]["Message-ID"] == f"<{message.id}@metricis>"


async def test_a_refusing_smtp_server_gives_the_reason_then_the_retry_delivers_once(
    stack: Stack, smtp: SmtpSink
) -> None:
    seeded = await _seed_and_dispatch(stack, 2)
    busy, unknown = seeded.participants
    smtp.refuse_next(1, 451, "4.3.0 Mailbox busy, try later")
    stack.start_relay(OUTBOX_LEASE_SECONDS=LEASE_S)
    worker = await stack.start_worker("only", **_env(smtp))

    async def refused_once() -> bool:
        statuses = {
            m.participant_id: (m.status, m.error or "") for m in await _messages(stack, seeded)
        }
        return any(s == "retrying" and "451" in e for s, e in statuses.values())

    await stack.wait_for(refused_once, timeout=30, what="the 451 on a message")
    await stack.wait_for(
        lambda: _jobs_finished(stack, seeded), timeout=60, what="both messages sent"
    )
    messages = await _messages(stack, seeded)
    assert sorted(m.status for m in messages) == ["sent", "sent"]
    assert sorted(m.attempts for m in messages) == [1, 2]
    smtp.wait_for(2)
    assert sorted(str(m["To"]) for m in smtp.messages) == sorted(seeded.emails.values())

    # What the SMTP server holds: the address and the template's text, no other PHI.
    for email in smtp.messages:
        participant = next(p for p in seeded.participants if seeded.emails[p.id] == email["To"])
        body = email.get_content()
        # The built-in reminder shows the visit, its window in local time and the app's link.
        assert "Week1" in body and "CET" in body and "https://app.example.org/" in body
        assert seeded.phones[participant.id] not in email.as_string()
        others = [e for pid, e in seeded.emails.items() if pid != participant.id]
        assert not any(other in email.as_string() for other in others)
    # And no process logged an address or a number.
    logs = worker.output() + "".join(p.output() for p in stack.processes)
    for secret in [*seeded.emails.values(), *seeded.phones.values()]:
        assert secret not in logs
    assert busy and unknown  # both participants were reminded


async def test_a_permanent_refusal_is_failed_with_the_reason_and_a_resend_delivers(
    stack: Stack, smtp: SmtpSink
) -> None:
    seeded = await _seed_and_dispatch(stack, 1)
    smtp.refuse_next(1, 550, "5.1.1 No such user here")
    stack.start_relay(OUTBOX_LEASE_SECONDS=LEASE_S)
    await stack.start_worker("only", **_env(smtp))

    await stack.wait_for(
        lambda: _jobs_finished(stack, seeded), timeout=30, what="the refused message"
    )
    (message,) = await _messages(stack, seeded)
    assert message.status == "failed" and "550" in (message.error or "")
    assert "No such user" in (message.error or "")
    assert smtp.messages == []
    async with stack.sessions() as db, db.begin():
        job = await db.get(OutboxEvent, message.job_id)
        assert job is not None and job.status == JobStatus.failed  # the dead letter shows it
        found = await db.get(ReminderMessage, message.id)
        assert found is not None
        await resend.resend(db, message=found, now=datetime.now(UTC))

    async def sent() -> bool:
        (message,) = await _messages(stack, seeded)
        return message.status == "sent"

    await stack.wait_for(sent, timeout=30, what="the resent message")
    smtp.wait_for(1)
    assert len(smtp.messages) == 1


async def test_withdrawal_and_opt_out_stop_messages_already_queued(
    stack: Stack, smtp: SmtpSink
) -> None:
    seeded = await _seed_and_dispatch(stack, 2)
    leaving, quiet = seeded.participants
    async with stack.sessions() as db, db.begin():
        await consent_service.withdraw(
            db, participant_id=leaving.id, by=None,
            withdrawal_in=WithdrawalIn(reason="moving away", data_use=DataUse.all_data),
        )  # fmt: skip
        contact = await db.get(ParticipantContact, quiet.id)
        assert contact is not None
        contact.email_opt_out = True
    stack.start_relay(OUTBOX_LEASE_SECONDS=LEASE_S)
    await stack.start_worker("only", **_env(smtp))

    await stack.wait_for(
        lambda: _jobs_finished(stack, seeded), timeout=30, what="both jobs to finish"
    )
    messages = {m.participant_id: m for m in await _messages(stack, seeded)}
    assert messages[leaving.id].status == "cancelled"
    assert "withdrew" in (messages[leaving.id].error or "")
    assert messages[quiet.id].status == "cancelled"
    assert "opted out" in (messages[quiet.id].error or "")
    assert smtp.messages == []
