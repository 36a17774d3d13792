"""Reminder rules over HTTP: checked as a whole (422 in the envelope, nothing saved), one per
(visit, trigger, hours), only for the study's own visits, configured by those who configure its
protocols, every change audited."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit.models import AuditAction
from server.core.config import Settings
from server.reminders.models import ReminderRule
from tests import factories
from tests import ingest_factories as ingest
from tests import reminder_factories as rf
from tests.audit_helpers import only_entry
from tests.reminder_factories import World


@pytest.fixture
async def world(db: AsyncSession, settings: Settings) -> World:
    return await rf.create_world(db, settings)


async def _post_rule(
    client: AsyncClient, world: World, body: dict[str, Any], role: str = "coordinator"
) -> Any:
    return await client.post(
        "/api/reminders/rules",
        params={"study_id": str(world.study.id)},
        json=body,
        headers=world.headers[role],
    )


async def _rule_count(db: AsyncSession, world: World) -> int:
    return (
        await db.scalar(
            select(func.count())
            .select_from(ReminderRule)
            .where(ReminderRule.study_id == world.study.id)
        )
        or 0
    )


async def test_a_rule_is_created_with_its_defaults_listed_and_audited(
    client: AsyncClient, db: AsyncSession, world: World
) -> None:
    visit = world.schedule.visits[1]

    response = await _post_rule(
        client,
        world,
        {
            "visit_id": str(visit.id),
            "trigger": "before_close",
            "hours_before_close": 6,
            "channels": ["sms", "email"],
        },
    )

    assert response.status_code == 201, response.text
    rule = response.json()
    assert rule["visit_label"] == "Week1"
    assert (rule["trigger"], rule["hours_before_close"], rule["channels"]) == (
        "before_close",
        6,
        ["sms", "email"],
    )
    assert (rule["quiet_start"], rule["quiet_end"], rule["stale_after_minutes"]) == (
        "21:00",
        "08:00",
        360,
    )
    assert (rule["escalate_to_sms_after_hours"], rule["active"]) == (None, True)
    entry = await only_entry(db, AuditAction.reminder_rule_created, rule["id"])
    assert entry.summary["channels"] == ["sms", "email"]
    listed = await client.get(
        "/api/reminders/rules",
        params={"study_id": str(world.study.id)},
        headers=world.headers["researcher"],
    )
    assert {r["id"] for r in listed.json()} == {rule["id"], str(world.rule.id)}
    one = await client.get(f"/api/reminders/rules/{rule['id']}", headers=world.headers["viewer"])
    assert one.json() == rule


@pytest.mark.parametrize(
    "fields",
    [
        {"trigger": "before_close"},  # no hours
        {"trigger": "before_close", "hours_before_close": 0},
        {"trigger": "window_open", "hours_before_close": 5},
        {"trigger": "sometime"},
        {"trigger": "missed", "channels": []},
        {"trigger": "missed", "channels": ["email", "email"]},
        {"trigger": "missed", "channels": ["fax"]},
        {"trigger": "missed", "quiet_start": "25:00"},
        {"trigger": "missed", "quiet_end": "8:00"},
        {"trigger": "missed", "quiet_end": "08:00:30"},
        {"trigger": "missed", "stale_after_minutes": 0},
        {"trigger": "missed", "stale_after_minutes": 10081},
        {"trigger": "missed", "channels": ["sms", "email"], "escalate_to_sms_after_hours": 24},
        {"trigger": "missed", "channels": ["email"], "escalate_to_sms_after_hours": 169},
        {"trigger": "missed", "channels": ["email"], "escalate_to_sms_after_hours": 0},
    ],
)
async def test_an_invalid_rule_is_refused_with_the_envelope_and_nothing_saved(
    client: AsyncClient, db: AsyncSession, world: World, fields: dict[str, Any]
) -> None:
    visit_id = str(world.schedule.visits[1].id)
    response = await _post_rule(client, world, {"visit_id": visit_id, **fields})

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error_code"] == "validation_error" and body["details"]
    assert await _rule_count(db, world) == 1  # the world's own rule only


async def test_the_same_visit_trigger_and_hours_twice_is_a_conflict(
    client: AsyncClient, db: AsyncSession, world: World
) -> None:
    visit = str(world.schedule.visits[1].id)
    six = {"visit_id": visit, "trigger": "before_close", "hours_before_close": 6}
    assert (await _post_rule(client, world, six)).status_code == 201

    again = await _post_rule(client, world, {**six, "channels": ["sms"]})

    assert (again.status_code, again.json()["error_code"]) == (409, "reminder_rule_exists")
    # Other hours before the same close are another rule.
    assert (await _post_rule(client, world, {**six, "hours_before_close": 2})).status_code == 201
    assert await _rule_count(db, world) == 3


async def test_a_visit_of_another_studys_protocol_is_not_found(
    client: AsyncClient, db: AsyncSession, world: World
) -> None:
    other = await factories.create_study(db)
    battery = await ingest.create_battery(db, other, await ingest.standard_modules(db))
    foreign = (await rf.create_schedule(db, other, battery)).visits[0]

    for visit_id in (foreign.id, uuid.uuid4()):
        response = await _post_rule(client, world, {"visit_id": str(visit_id), "trigger": "missed"})
        assert (response.status_code, response.json()["error_code"]) == (404, "not_found")
    assert await _rule_count(db, world) == 1


@pytest.mark.parametrize(
    ("role", "code"),
    [("researcher", "forbidden"), ("viewer", "forbidden"), ("scoped", "site_scoped")],
)
async def test_only_whole_study_coordinators_configure_rules(
    client: AsyncClient, db: AsyncSession, world: World, role: str, code: str
) -> None:
    headers = world.headers[role]
    url = f"/api/reminders/rules/{world.rule.id}"

    for response in (
        await _post_rule(
            client, world, {"visit_id": str(world.schedule.visits[1].id), "trigger": "missed"}, role
        ),
        await client.patch(url, json={"active": False}, headers=headers),
        await client.delete(url, headers=headers),
    ):
        assert (response.status_code, response.json()["error_code"]) == (403, code)
    assert (await client.get(url, headers=headers)).json()["active"] is True


async def test_a_rule_is_changed_as_a_whole_and_the_change_audited(
    client: AsyncClient, db: AsyncSession, world: World
) -> None:
    url, headers = f"/api/reminders/rules/{world.rule.id}", world.headers["coordinator"]

    changed = await client.patch(
        url,
        json={
            "channels": ["email", "sms"],
            "escalate_to_sms_after_hours": 24,
            "quiet_start": "22:30",
        },
        headers=headers,
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["channels"], changed.json()["quiet_start"]) == (
        ["email", "sms"],
        "22:30",
    )
    entry = await only_entry(db, AuditAction.reminder_rule_updated, world.rule.id)
    assert entry.summary["channels"] == {"from": ["email"], "to": ["email", "sms"]}
    assert "trigger" not in entry.summary

    # Escalation needs email first; before_close needs hours: the rule as changed is checked.
    for body in ({"channels": ["sms"]}, {"trigger": "before_close"}):
        refused = await client.patch(url, json=body, headers=headers)
        assert (refused.status_code, refused.json()["error_code"]) == (422, "validation_error"), (
            body
        )
    assert (await client.get(url, headers=headers)).json() == changed.json()


async def test_changing_a_rule_into_another_ones_key_is_a_conflict(
    client: AsyncClient, world: World
) -> None:
    visit = str(world.schedule.visits[0].id)
    missed = await _post_rule(client, world, {"visit_id": visit, "trigger": "missed"})

    response = await client.patch(
        f"/api/reminders/rules/{missed.json()['id']}",
        json={"trigger": "window_open"},
        headers=world.headers["coordinator"],
    )

    assert (response.status_code, response.json()["error_code"]) == (409, "reminder_rule_exists")


async def test_a_deleted_rule_is_gone_and_audited(
    client: AsyncClient, db: AsyncSession, world: World
) -> None:
    url, headers = f"/api/reminders/rules/{world.rule.id}", world.headers["coordinator"]

    assert (await client.delete(url, headers=headers)).status_code == 204

    assert (await client.get(url, headers=headers)).status_code == 404
    entry = await only_entry(db, AuditAction.reminder_rule_deleted, world.rule.id)
    assert entry.summary["trigger"] == "window_open"
