"""Coordinator tasks over HTTP: the coordinators' list (filters, newest first, their sites
only), one task, and closing it with a note (once, audited); other roles and studies kept out."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit.models import AuditAction
from server.coordinator_tasks.models import CoordinatorTask, TaskStatus
from server.core import clock
from server.core.config import Settings
from server.studies.models import Site, Study, StudyRole
from server.users.models import User
from tests import factories
from tests import ingest_factories as ingest
from tests import reminder_factories as rf
from tests.audit_helpers import entries, only_entry

NOW = datetime(2026, 11, 4, 15, 30, tzinfo=UTC)
EMAIL = "ann.smith@example.org"


@dataclass
class World:
    study: Study
    site_a: Site
    site_b: Site
    tasks: dict[str, CoordinatorTask]  # a1 (site A, oldest), a2 (site A, closed), b1 (site B)
    coordinator: User
    headers: dict[str, dict[str, str]]  # by role: coordinator, scoped (site A), researcher...


@pytest.fixture
def frozen() -> Iterator[None]:
    clock.clock.set(NOW)
    yield
    clock.clock.reset()


@pytest.fixture
async def world(db: AsyncSession, settings: Settings) -> World:
    study = await factories.create_study(db)
    site_a = await factories.create_site(db, study, code="A")
    site_b = await factories.create_site(db, study, code="B")
    battery = await ingest.create_battery(db, study, await ingest.standard_modules(db))
    schedule = await rf.create_schedule(db, study, battery)
    pa = await factories.create_participant(db, site_a, code="P-A", email=EMAIL)
    pb = await factories.create_participant(db, site_b, code="P-B", email="b@example.org")
    at = rf.MOMENT + timedelta(days=1)
    tasks = {
        "a1": await rf.create_task(
            db, await rf.create_occurrence(db, pa, schedule, 0), created_at=at
        ),
        "a2": await rf.create_task(
            db,
            await rf.create_occurrence(db, pa, schedule, 1),
            status=TaskStatus.closed,
            created_at=at + timedelta(hours=1),
        ),
        "b1": await rf.create_task(
            db, await rf.create_occurrence(db, pb, schedule, 0), created_at=at + timedelta(hours=2)
        ),
    }
    users = {
        role: await factories.create_user(db)
        for role in ("coordinator", "scoped", "researcher", "viewer")
    }
    await factories.add_member(db, study, users["coordinator"], StudyRole.coordinator)
    await factories.add_member(db, study, users["scoped"], StudyRole.coordinator, sites=[site_a])
    await factories.add_member(db, study, users["researcher"], StudyRole.researcher)
    await factories.add_member(db, study, users["viewer"], StudyRole.viewer)
    return World(
        study=study,
        site_a=site_a,
        site_b=site_b,
        tasks=tasks,
        coordinator=users["coordinator"],
        headers={r: await factories.auth_headers(db, settings, u) for r, u in users.items()},
    )


def _ids(response_json: list[dict[str, object]], world: World) -> list[str]:
    names = {str(t.id): name for name, t in world.tasks.items()}
    return [names[item["id"]] for item in response_json]  # type: ignore[index]


async def _list(
    client: AsyncClient, world: World, role: str = "coordinator", **params: object
) -> list[str]:
    response = await client.get(
        "/api/tasks",
        params={"study_id": str(world.study.id), **params},
        headers=world.headers[role],
    )
    assert response.status_code == 200, response.text
    return _ids(response.json(), world)


async def test_the_list_is_newest_first_and_filters_by_status_site_and_participant(
    client: AsyncClient, world: World
) -> None:
    assert await _list(client, world) == ["b1", "a2", "a1"]
    assert await _list(client, world, status="open") == ["b1", "a1"]
    assert await _list(client, world, status="closed") == ["a2"]
    assert await _list(client, world, site_id=world.site_b.id) == ["b1"]
    pa = world.tasks["a1"].participant_id
    assert await _list(client, world, participant_id=pa) == ["a2", "a1"]
    assert await _list(client, world, limit=1, offset=1) == ["a2"]


async def test_a_task_shows_the_participant_code_and_visit_label_never_contact_details(
    client: AsyncClient, world: World
) -> None:
    task = world.tasks["a1"]

    response = await client.get(f"/api/tasks/{task.id}", headers=world.headers["coordinator"])

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["participant_code"], body["visit_label"]) == ("P-A", "Baseline")
    assert (body["status"], body["kind"], body["site_id"]) == (
        "open",
        "missed_visit",
        str(world.site_a.id),
    )
    assert EMAIL not in response.text


async def test_a_site_scoped_coordinator_sees_only_their_sites_tasks(
    client: AsyncClient, world: World
) -> None:
    assert await _list(client, world, "scoped") == ["a2", "a1"]
    other = await client.get(
        "/api/tasks",
        params={"study_id": str(world.study.id), "site_id": str(world.site_b.id)},
        headers=world.headers["scoped"],
    )
    assert other.status_code == 404
    b1 = world.tasks["b1"]
    for response in (
        await client.get(f"/api/tasks/{b1.id}", headers=world.headers["scoped"]),
        await client.post(
            f"/api/tasks/{b1.id}/close", json={"note": "x"}, headers=world.headers["scoped"]
        ),
    ):
        assert (response.status_code, response.json()["error_code"]) == (404, "not_found")


async def test_closing_with_a_note_closes_it_by_the_user_and_audits_it(
    client: AsyncClient, db: AsyncSession, world: World, frozen: None
) -> None:
    task = world.tasks["a1"]

    response = await client.post(
        f"/api/tasks/{task.id}/close",
        json={"note": "  Called; rebooked for Friday.  "},
        headers=world.headers["coordinator"],
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "closed"
    assert body["note"] == "Called; rebooked for Friday."
    assert body["closed_by"] == str(world.coordinator.id)
    assert datetime.fromisoformat(body["closed_at"]) == NOW
    stored = await db.scalar(
        select(CoordinatorTask)
        .where(CoordinatorTask.id == task.id)
        .execution_options(populate_existing=True)
    )
    assert stored is not None and (stored.status, stored.closed_by) == (
        TaskStatus.closed,
        world.coordinator.id,
    )
    entry = await only_entry(db, AuditAction.task_closed, task.id)
    assert entry.actor_id == world.coordinator.id
    assert (entry.study_id, entry.site_id) == (world.study.id, world.site_a.id)
    assert entry.summary["note"] == "Called; rebooked for Friday."
    assert await _list(client, world, status="open") == ["b1"]


async def test_closing_a_closed_task_is_a_conflict(
    client: AsyncClient, db: AsyncSession, world: World
) -> None:
    task = world.tasks["a1"]
    url, headers = f"/api/tasks/{task.id}/close", world.headers["coordinator"]
    assert (await client.post(url, json={"note": "First."}, headers=headers)).status_code == 200

    again = await client.post(url, json={"note": "Second."}, headers=headers)

    assert (again.status_code, again.json()["error_code"]) == (409, "task_closed")
    assert len(await entries(db, AuditAction.task_closed, task.id)) == 1
    assert (await client.get(f"/api/tasks/{task.id}", headers=headers)).json()["note"] == "First."


@pytest.mark.parametrize("body", [{}, {"note": ""}, {"note": "   "}, {"note": "x" * 2001}])
async def test_closing_needs_a_note_of_1_to_2000_characters(
    client: AsyncClient, db: AsyncSession, world: World, body: dict[str, str]
) -> None:
    task = world.tasks["a1"]

    response = await client.post(
        f"/api/tasks/{task.id}/close", json=body, headers=world.headers["coordinator"]
    )

    assert (response.status_code, response.json()["error_code"]) == (422, "validation_error")
    assert (await client.get(f"/api/tasks/{task.id}", headers=world.headers["coordinator"])).json()[
        "status"
    ] == "open"
    assert await entries(db, AuditAction.task_closed, task.id) == []


async def test_another_studys_task_is_not_found(
    client: AsyncClient, db: AsyncSession, settings: Settings, world: World
) -> None:
    other = await factories.create_study(db)
    outsider = await factories.create_user(db)
    await factories.add_member(db, other, outsider, StudyRole.coordinator)
    headers = await factories.auth_headers(db, settings, outsider)
    task = world.tasks["a1"]

    for response in (
        await client.get(f"/api/tasks/{task.id}", headers=headers),
        await client.post(f"/api/tasks/{task.id}/close", json={"note": "x"}, headers=headers),
        await client.get(f"/api/tasks/{uuid.uuid4()}", headers=world.headers["coordinator"]),
        await client.get("/api/tasks", params={"study_id": str(world.study.id)}, headers=headers),
    ):
        assert (response.status_code, response.json()["error_code"]) == (404, "not_found")


@pytest.mark.parametrize("role", ["researcher", "viewer"])
async def test_researchers_and_viewers_may_not_see_or_close_tasks(
    client: AsyncClient, world: World, role: str
) -> None:
    task = world.tasks["a1"]
    headers = world.headers[role]

    for response in (
        await client.get("/api/tasks", params={"study_id": str(world.study.id)}, headers=headers),
        await client.get(f"/api/tasks/{task.id}", headers=headers),
        await client.post(f"/api/tasks/{task.id}/close", json={"note": "x"}, headers=headers),
    ):
        assert (response.status_code, response.json()["error_code"]) == (403, "forbidden")
