"""Reminder messages over HTTP, the coordinators' view: the provider's reason for a failure
and never an address, their sites only; resend through exactly one new outbox job, never of a
message sent or to a withdrawn participant."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit.models import AuditAction
from server.core import clock
from server.core.config import Settings
from server.outbox.models import OutboxEvent
from server.participants.models import ParticipantStatus
from server.reminders.models import Channel, MessageStatus, ReminderMessage
from server.studies.models import StudyRole
from tests import factories
from tests import reminder_factories as rf
from tests.audit_helpers import entries, only_entry, text_of
from tests.reminder_factories import EMAIL, World

NOW = datetime(2026, 11, 4, 15, 30, tzinfo=UTC)
BOUNCE = "550 5.1.1 The email account that you tried to reach does not exist"


@pytest.fixture
def frozen() -> Iterator[None]:
    clock.clock.set(NOW)
    yield
    clock.clock.reset()


@pytest.fixture
async def world(db: AsyncSession, settings: Settings) -> World:
    return await rf.create_world(db, settings)


async def _message(
    db: AsyncSession, world: World, side: str = "A", **fields: Any
) -> ReminderMessage:
    """A message to the participant of site `side` (failed, unless told otherwise)."""
    occurrence = await rf.create_occurrence(db, world.participants[side], world.schedule)
    return await rf.create_message(db, occurrence, world.rule, **fields)


async def _messages(
    client: AsyncClient, world: World, role: str = "coordinator", **params: Any
) -> Any:
    response = await client.get(
        "/api/reminders/messages",
        params={"study_id": str(world.study.id), **params},
        headers=world.headers[role],
    )
    assert response.status_code == 200, response.text
    return response.json()


async def _jobs(db: AsyncSession) -> list[OutboxEvent]:
    return list(
        (
            await db.execute(select(OutboxEvent).where(OutboxEvent.topic == "reminders.send"))
        ).scalars()
    )


async def test_messages_show_the_providers_reason_for_a_failure_and_never_the_address(
    client: AsyncClient, db: AsyncSession, world: World
) -> None:
    failed = await _message(db, world, error=BOUNCE, created_at=NOW)
    sent = await _message(
        db, world, status=MessageStatus.sent, error=None, created_at=NOW.replace(hour=16)
    )
    sms = await _message(
        db,
        world,
        "B",
        channel=Channel.sms,
        status=MessageStatus.sent,
        provider="twilio",
        created_at=NOW.replace(hour=17),
    )

    listed = await _messages(client, world)

    assert [m["id"] for m in listed] == [str(sms.id), str(sent.id), str(failed.id)]
    first = listed[2]
    assert (first["status"], first["error"], first["provider"]) == ("failed", BOUNCE, "smtp")
    assert (first["participant_code"], first["visit_label"], first["trigger"]) == (
        "P-A",
        "Baseline",
        "window_open",
    )
    assert (first["channel"], first["kind"], first["attempts"]) == ("email", "reminder", 1)
    assert first["occurrence_id"] == str(failed.occurrence_id)
    one = await client.get(
        f"/api/reminders/messages/{failed.id}", headers=world.headers["coordinator"]
    )
    assert one.json() == first
    everything = str(listed) + one.text
    assert EMAIL not in everything and "7700900123" not in everything
    assert [m["id"] for m in await _messages(client, world, status="failed")] == [str(failed.id)]
    assert [m["id"] for m in await _messages(client, world, channel="sms")] == [str(sms.id)]
    by_participant = await _messages(client, world, participant_id=world.participants["A"].id)
    assert [m["id"] for m in by_participant] == [str(sent.id), str(failed.id)]
    assert [m["id"] for m in await _messages(client, world, limit=1, offset=1)] == [str(sent.id)]


async def test_a_site_scoped_coordinator_sees_only_their_sites_messages(
    client: AsyncClient, db: AsyncSession, world: World
) -> None:
    own = await _message(db, world, "A")
    other = await _message(db, world, "B")

    assert [m["id"] for m in await _messages(client, world, "scoped")] == [str(own.id)]
    headers = world.headers["scoped"]
    for response in (
        await client.get(f"/api/reminders/messages/{other.id}", headers=headers),
        await client.post(f"/api/reminders/messages/{other.id}/resend", headers=headers),
        await client.get(
            "/api/reminders/messages",
            params={
                "study_id": str(world.study.id),
                "participant_id": str(world.participants["B"].id),
            },
            headers=headers,
        ),
    ):
        assert (response.status_code, response.json()["error_code"]) == (404, "not_found")
    assert await _jobs(db) == []


@pytest.mark.parametrize("role", ["researcher", "viewer"])
async def test_researchers_and_viewers_do_not_see_messages(
    client: AsyncClient, db: AsyncSession, world: World, role: str
) -> None:
    message = await _message(db, world)
    headers = world.headers[role]

    for response in (
        await client.get(
            "/api/reminders/messages", params={"study_id": str(world.study.id)}, headers=headers
        ),
        await client.get(f"/api/reminders/messages/{message.id}", headers=headers),
        await client.post(f"/api/reminders/messages/{message.id}/resend", headers=headers),
    ):
        assert (response.status_code, response.json()["error_code"]) == (403, "forbidden")


@pytest.mark.parametrize(
    "status", [MessageStatus.failed, MessageStatus.skipped, MessageStatus.cancelled]
)
async def test_resending_queues_the_message_with_exactly_one_new_job(
    client: AsyncClient, db: AsyncSession, world: World, frozen: None, status: MessageStatus
) -> None:
    message = await _message(db, world, status=status, error=BOUNCE)

    response = await client.post(
        f"/api/reminders/messages/{message.id}/resend", headers=world.headers["coordinator"]
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["error"]) == ("queued", None)
    assert datetime.fromisoformat(body["send_at"]) == NOW
    jobs = await _jobs(db)
    assert len(jobs) == 1
    job = jobs[0]
    assert job.payload == {"message_id": str(message.id)}
    assert (job.study_id, job.subject_id, job.due_at) == (
        world.study.id,
        message.participant_id,
        NOW,
    )
    stored = await db.scalar(
        select(ReminderMessage)
        .where(ReminderMessage.id == message.id)
        .execution_options(populate_existing=True)
    )
    assert stored is not None and (stored.status, stored.job_id) == (MessageStatus.queued, job.id)
    entry = await only_entry(db, AuditAction.reminder_message_resent, message.id)
    assert entry.summary["previous_status"] == status.value
    assert EMAIL not in text_of(entry)


@pytest.mark.parametrize(
    "status",
    [MessageStatus.sent, MessageStatus.delivered, MessageStatus.queued, MessageStatus.sending],
)
async def test_a_message_not_failed_skipped_or_cancelled_is_not_resent(
    client: AsyncClient, db: AsyncSession, world: World, status: MessageStatus
) -> None:
    message = await _message(db, world, status=status)

    response = await client.post(
        f"/api/reminders/messages/{message.id}/resend", headers=world.headers["coordinator"]
    )

    assert (response.status_code, response.json()["error_code"]) == (409, "message_not_resendable")
    assert await _jobs(db) == []
    assert await entries(db, AuditAction.reminder_message_resent) == []


async def test_resending_twice_makes_one_job(
    client: AsyncClient, db: AsyncSession, world: World
) -> None:
    message = await _message(db, world)
    url, headers = f"/api/reminders/messages/{message.id}/resend", world.headers["coordinator"]

    assert (await client.post(url, headers=headers)).status_code == 200
    again = await client.post(url, headers=headers)

    assert (again.status_code, again.json()["error_code"]) == (409, "message_not_resendable")
    assert len(await _jobs(db)) == 1


async def test_nothing_is_resent_to_a_withdrawn_participant(
    client: AsyncClient, db: AsyncSession, world: World
) -> None:
    message = await _message(db, world, error=BOUNCE)
    world.participants["A"].status = ParticipantStatus.withdrawn
    await db.flush()

    response = await client.post(
        f"/api/reminders/messages/{message.id}/resend", headers=world.headers["coordinator"]
    )

    assert (response.status_code, response.json()["error_code"]) == (409, "participant_withdrawn")
    assert await _jobs(db) == []
    shown = await client.get(
        f"/api/reminders/messages/{message.id}", headers=world.headers["coordinator"]
    )
    assert (shown.json()["status"], shown.json()["error"]) == ("failed", BOUNCE)


async def test_another_studys_message_and_rule_are_not_found(
    client: AsyncClient, db: AsyncSession, settings: Settings, world: World
) -> None:
    message = await _message(db, world)
    other = await factories.create_study(db)
    outsider = await factories.create_user(db)
    await factories.add_member(db, other, outsider, StudyRole.coordinator)
    headers = await factories.auth_headers(db, settings, outsider)

    for response in (
        await client.get(f"/api/reminders/messages/{message.id}", headers=headers),
        await client.post(f"/api/reminders/messages/{message.id}/resend", headers=headers),
        await client.get(f"/api/reminders/rules/{world.rule.id}", headers=headers),
        await client.patch(
            f"/api/reminders/rules/{world.rule.id}", json={"active": False}, headers=headers
        ),
        await client.get(
            "/api/reminders/messages", params={"study_id": str(world.study.id)}, headers=headers
        ),
    ):
        assert (response.status_code, response.json()["error_code"]) == (404, "not_found")
    assert await _jobs(db) == []
