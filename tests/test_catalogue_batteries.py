"""Batteries: a study's ordered list of published modules, behind the study's access rules."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from server.batteries import service as batteries_service
from server.core.catalogue import PublicationStatus
from server.core.config import Settings
from server.demo import seed_demo_batteries
from server.modules import service as modules_service
from server.modules.builtin import load_builtins
from server.modules.builtin_cognitive import SIMPLE_RT
from server.modules.models import Module
from server.modules.schemas import ModuleCreate
from server.studies.models import Study, StudyRole
from tests import factories
from tests.test_access_matrix import study_scoped_operations


@dataclass
class Setup:
    study: Study
    coordinator: dict[str, str]
    viewer: dict[str, str]
    modules: dict[str, Module]


@pytest.fixture
async def setup(db: AsyncSession, settings: Settings) -> Setup:
    study = await factories.create_study(db)
    coordinator = await factories.create_user(db)
    viewer = await factories.create_user(db)
    await factories.add_member(db, study, coordinator, StudyRole.coordinator)
    await factories.add_member(db, study, viewer, StudyRole.viewer)
    return Setup(
        study=study,
        coordinator=await factories.auth_headers(db, settings, coordinator),
        viewer=await factories.auth_headers(db, settings, viewer),
        modules=await load_builtins(db),
    )


def battery_body(module_ids: list[Any], key: str = "visit", **overrides: Any) -> dict[str, Any]:
    return {"key": key, "name": "Visit", "module_ids": [str(m) for m in module_ids], **overrides}


async def test_create_read_update_and_publish_a_battery(
    client: AsyncClient, db: AsyncSession, setup: Setup
) -> None:
    m = setup.modules
    params = {"study_id": str(setup.study.id)}
    order = [m["cpt"].id, m["simple_rt"].id, m["mood9"].id]
    created = await client.post(
        "/api/batteries", params=params, json=battery_body(order), headers=setup.coordinator
    )
    assert created.status_code == 201, created.text
    battery = created.json()
    assert battery["status"] == "draft" and battery["study_id"] == str(setup.study.id)
    assert [(x["position"], x["key"], x["version"], x["kind"]) for x in battery["modules"]] == [
        (0, "cpt", 1, "cognitive"),
        (1, "simple_rt", 1, "cognitive"),
        (2, "mood9", 1, "questionnaire"),
    ]
    url = f"/api/batteries/{battery['id']}"

    read = await client.get(url, headers=setup.viewer)
    assert read.status_code == 200 and read.json()["modules"] == battery["modules"]
    listed = await client.get("/api/batteries", params=params, headers=setup.viewer)
    assert [b["id"] for b in listed.json()] == [battery["id"]]
    assert listed.json()[0]["modules"] == battery["modules"]

    reordered = await client.patch(
        url,
        json={"name": "Baseline", "module_ids": [str(m["simple_rt"].id), str(m["cpt"].id)]},
        headers=setup.coordinator,
    )
    assert reordered.status_code == 200, reordered.text
    assert reordered.json()["name"] == "Baseline"
    assert [x["key"] for x in reordered.json()["modules"]] == ["simple_rt", "cpt"]
    modules = await batteries_service.get_battery_modules(db, uuid.UUID(battery["id"]))
    assert [x.key for x in modules] == ["simple_rt", "cpt"]

    published = await client.post(f"{url}/publish", headers=setup.coordinator)
    assert published.status_code == 200 and published.json()["status"] == "published"
    frozen = await client.patch(url, json={"name": "Other"}, headers=setup.coordinator)
    assert frozen.status_code == 409 and frozen.json()["error_code"] == "battery_published"
    assert (await client.post(f"{url}/publish", headers=setup.coordinator)).status_code == 409

    taken = await client.post(
        "/api/batteries",
        params=params,
        json=battery_body([m["cpt"].id]),
        headers=setup.coordinator,
    )
    assert taken.status_code == 409 and taken.json()["error_code"] == "battery_version_taken"
    v2 = await client.post(
        "/api/batteries",
        params=params,
        json=battery_body([m["cpt"].id], version=2),
        headers=setup.coordinator,
    )
    assert v2.status_code == 201 and v2.json()["version"] == 2


async def test_module_ids_must_be_published_known_and_distinct(
    client: AsyncClient, db: AsyncSession, setup: Setup
) -> None:
    m = setup.modules
    draft = await modules_service.create(
        db, module_in=ModuleCreate.model_validate({**SIMPLE_RT, "key": "draft_rt"})
    )
    simple_rt_v2 = await modules_service.publish(
        db, module=await modules_service.new_version(db, module=m["simple_rt"])
    )
    params = {"study_id": str(setup.study.id)}
    cases: list[tuple[list[Any], int, str]] = [
        ([m["cpt"].id, draft.id], 1, "draft"),
        ([uuid.uuid4(), m["cpt"].id], 0, "no such module"),
        ([m["cpt"].id, m["simple_rt"].id, m["cpt"].id], 2, "repeats module_ids[0]"),
        ([m["simple_rt"].id, simple_rt_v2.id], 1, "simple_rt is already"),
    ]
    for module_ids, index, text in cases:
        response = await client.post(
            "/api/batteries",
            params=params,
            json=battery_body(module_ids),
            headers=setup.coordinator,
        )
        assert response.status_code == 422, response.text
        [detail] = response.json()["details"]
        assert detail["loc"] == ["body", "module_ids", index]
        assert text in detail["msg"] and f"module_ids[{index}]" in detail["msg"]

    empty = await client.post(
        "/api/batteries", params=params, json=battery_body([]), headers=setup.coordinator
    )
    assert empty.status_code == 422
    assert empty.json()["details"][0]["loc"] == ["body", "module_ids"]

    battery = await client.post(
        "/api/batteries", params=params, json=battery_body([m["cpt"].id]), headers=setup.coordinator
    )
    patched = await client.patch(
        f"/api/batteries/{battery.json()['id']}",
        json={"module_ids": [str(m["cpt"].id), str(draft.id)]},
        headers=setup.coordinator,
    )
    assert patched.status_code == 422
    assert patched.json()["details"][0]["loc"] == ["body", "module_ids", 1]


async def test_viewer_reads_but_cannot_create_or_change(client: AsyncClient, setup: Setup) -> None:
    params = {"study_id": str(setup.study.id)}
    body = battery_body([setup.modules["cpt"].id])
    denied = await client.post("/api/batteries", params=params, json=body, headers=setup.viewer)
    assert denied.status_code == 403 and denied.json()["error_code"] == "forbidden"
    assert (await client.get("/api/batteries", params=params, headers=setup.viewer)).json() == []

    created = await client.post(
        "/api/batteries", params=params, json=body, headers=setup.coordinator
    )
    url = f"/api/batteries/{created.json()['id']}"
    assert (await client.patch(url, json={"name": "X"}, headers=setup.viewer)).status_code == 403
    assert (await client.post(f"{url}/publish", headers=setup.viewer)).status_code == 403
    assert (await client.get(url)).status_code == 401


async def test_battery_of_another_study_is_404(
    client: AsyncClient, db: AsyncSession, settings: Settings, setup: Setup
) -> None:
    created = await client.post(
        "/api/batteries",
        params={"study_id": str(setup.study.id)},
        json=battery_body([setup.modules["cpt"].id]),
        headers=setup.coordinator,
    )
    url = f"/api/batteries/{created.json()['id']}"
    other_study = await factories.create_study(db)
    outsider = await factories.create_user(db)
    await factories.add_member(db, other_study, outsider, StudyRole.coordinator)
    headers = await factories.auth_headers(db, settings, outsider)

    for response in (
        await client.get(url, headers=headers),
        await client.patch(url, json={"name": "Mine now"}, headers=headers),
        await client.post(f"{url}/publish", headers=headers),
        await client.get(f"/api/batteries/{uuid.uuid4()}", headers=headers),
        await client.get(
            "/api/batteries", params={"study_id": str(setup.study.id)}, headers=headers
        ),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error_code"] == "not_found"
    # Exactly as for an id that does not exist: nothing tells the two apart.
    assert (await client.get(url, headers=headers)).json()["message"] == (
        await client.get(f"/api/batteries/{uuid.uuid4()}", headers=headers)
    ).json()["message"]


def test_access_matrix_covers_the_battery_routes(app_instance: FastAPI) -> None:
    covered = {f"{m} {p}" for m, p, _ in study_scoped_operations(app_instance)}
    assert {
        "GET /api/batteries",
        "POST /api/batteries",
        "GET /api/batteries/{battery_id}",
        "PATCH /api/batteries/{battery_id}",
        "POST /api/batteries/{battery_id}/publish",
    } <= covered


async def test_demo_batteries(db: AsyncSession) -> None:
    study = await factories.create_study(db)
    standard, full = await seed_demo_batteries(db, study_id=study.id)
    assert (standard.key, full.key) == ("standard_visit", "full_visit")
    for battery in (standard, full):
        assert battery.status == PublicationStatus.published and battery.study_id == study.id
    assert [m.key for m in await batteries_service.get_battery_modules(db, standard.id)] == [
        "simple_rt",
        "choice_rt",
        "cpt",
    ]
    assert [m.key for m in await batteries_service.get_battery_modules(db, full.id)] == [
        "simple_rt",
        "choice_rt",
        "cpt",
        "digit_span",
        "mood9",
    ]
