"""A coordinator of study A gets 404 on every study-scoped route of study B.

The route list comes from the app's own OpenAPI document, so a new route that takes a
study, site or participant id is checked without editing this file; a path parameter this
file does not know fails the test until someone says which study it belongs to.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.core.crypto import token_box
from server.outbox.models import OutboxEvent
from server.redcap.models import RedcapConnection
from server.studies.models import StudyRole
from server.submissions.models import Submission
from tests import factories
from tests import ingest_factories as ingest

# Parameters whose value identifies something inside one study.
STUDY_SCOPED = {
    "study_id",
    "site_id",
    "participant_id",
    "submission_id",
    "battery_id",
    "job_id",
    "connection_id",  # a REDCap connection
}
# Parameters that name something outside any study (accounts, login sessions, the shared
# task catalogue, dead letters: administrators only).
NOT_STUDY_SCOPED = {"user_id", "session_id", "module_id", "item_bank_id", "dead_letter_id"}


@dataclass
class World:
    ids_b: dict[str, uuid.UUID]
    headers_a: dict[str, str]


@pytest.fixture
async def world(db: AsyncSession, settings: Settings) -> World:
    study_a = await factories.create_study(db)
    study_b = await factories.create_study(db)
    site_b = await factories.create_site(db, study_b)
    participant_b = await factories.create_participant(db, site_b, email="b@example.org")
    modules = await ingest.standard_modules(db)
    battery_b = await ingest.create_battery(db, study_b, modules)
    session_b = await ingest.start_session(db, participant_b, battery_b)
    submission_b = Submission(
        client_submission_id="b-1",
        participant_id=participant_b.id,
        study_id=study_b.id,
        session_id=session_b.id,
        checksum="0" * 64,
        raw_payload=b"{}",
    )
    db.add(submission_b)
    await db.flush()
    job_b = OutboxEvent(
        topic="archive.submission", payload={}, study_id=study_b.id, subject_id=submission_b.id
    )
    db.add(job_b)
    await db.flush()
    connection_b = RedcapConnection(
        study_id=study_b.id,
        api_url="https://redcap.example.org/api/",
        token_encrypted=token_box(settings).encrypt("0" * 32),
        token_last4="0000",
    )
    db.add(connection_b)
    await db.flush()
    coordinator_a = await factories.create_user(db)
    coordinator_b = await factories.create_user(db)
    await factories.add_member(db, study_a, coordinator_a, StudyRole.coordinator)
    await factories.add_member(db, study_b, coordinator_b, StudyRole.coordinator)
    return World(
        ids_b={
            "study_id": study_b.id,
            "site_id": site_b.id,
            "participant_id": participant_b.id,
            "submission_id": submission_b.id,
            "battery_id": battery_b.id,
            "job_id": job_b.id,
            "connection_id": connection_b.id,
            "user_id": coordinator_b.id,
        },
        headers_a=await factories.auth_headers(db, settings, coordinator_a),
    )


def study_scoped_operations(app: FastAPI) -> list[tuple[str, str, list[dict[str, Any]]]]:
    operations = []
    for path, methods in app.openapi()["paths"].items():
        for method, operation in methods.items():
            params = [p for p in operation.get("parameters", []) if p["in"] in ("path", "query")]
            names = {p["name"] for p in params}
            unknown = (
                {p["name"] for p in params if p["in"] == "path"} - STUDY_SCOPED - NOT_STUDY_SCOPED
            )
            assert not unknown, f"{method.upper()} {path}: classify path parameter(s) {unknown}"
            if names & STUDY_SCOPED:
                operations.append((method.upper(), path, params))
    return operations


def test_matrix_covers_the_study_routes(app_instance: FastAPI) -> None:
    covered = {f"{m} {p}" for m, p, _ in study_scoped_operations(app_instance)}
    # A floor, not the list: the list is whatever the app serves.
    assert "GET /api/studies/{study_id}" in covered
    assert "POST /api/participants/import" in covered
    assert "PUT /api/participants/{participant_id}/contact" in covered
    assert len(covered) >= 17


async def test_coordinator_of_a_gets_404_on_every_route_of_b(
    client: AsyncClient, app_instance: FastAPI, world: World
) -> None:
    failures = []
    for method, path, params in study_scoped_operations(app_instance):
        url = path
        query: dict[str, str] = {}
        for param in params:
            value = world.ids_b.get(param["name"])
            if param["in"] == "path":
                url = url.replace("{" + param["name"] + "}", str(value))
            elif value is not None:
                query[param["name"]] = str(value)
        body = {} if method in ("POST", "PUT", "PATCH") else None
        response = await client.request(
            method, url, params=query, json=body, headers=world.headers_a
        )
        envelope = response.json() if response.content else {}
        if response.status_code != 404 or envelope.get("error_code") != "not_found":
            failures.append(f"{method} {path} -> {response.status_code} {envelope}")
    assert not failures, "\n".join(failures)


async def test_lists_show_only_own_studies_and_participants(
    client: AsyncClient, db: AsyncSession, settings: Settings, world: World
) -> None:
    studies = (await client.get("/api/studies", headers=world.headers_a)).json()
    assert str(world.ids_b["study_id"]) not in {s["id"] for s in studies}
    assert len(studies) == 1
