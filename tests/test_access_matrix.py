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

from server.batteries.models import Battery
from server.core.config import Settings
from server.core.crypto import token_box
from server.core.models import utcnow
from server.exports.models import Export, RedcapPush
from server.message_templates.models import MessageTemplate, TemplateKind
from server.outbox.models import OutboxEvent
from server.redcap.models import RedcapConnection, RedcapMapping, RedcapParticipantImport
from server.reports.models import Report, ReportKind
from server.studies.models import Site, Study, StudyRole
from server.submissions.models import Submission
from tests import consent_factories as consent
from tests import factories
from tests import ingest_factories as ingest
from tests import reminder_factories as reminders
from tests import schedule_factories as sched

# Parameters whose value identifies something inside one study.
STUDY_SCOPED = {
    "study_id",
    "site_id",
    "participant_id",
    "submission_id",
    "battery_id",
    "job_id",
    "connection_id",  # a REDCap connection
    "import_id",  # a participant import from REDCap (of a connection)
    "protocol_id",  # a visit schedule protocol
    "visit_id",  # a participant's visit occurrence
    "document_id",  # a consent document
    "record_id",  # a consent record (a signature)
    "export_id",
    "push_id",  # a REDCap push (server.exports.redcap_push)
    "report_id",
    "template_id",  # a message template
    "task_id",  # a coordinator task (a missed visit to follow up)
    "rule_id",  # a reminder rule (of a protocol visit)
    "message_id",  # a reminder message
}
# Parameters that name something outside any study (accounts, login sessions, the shared
# task catalogue, dead letters: administrators only).
NOT_STUDY_SCOPED = {"user_id", "session_id", "module_id", "item_bank_id", "dead_letter_id"}
# Routes for a global role whose study_id / site_id are filters, not scope: any other staff
# member gets 403 whatever the study (tests/test_audit_api.py).
GLOBAL_ROLE_PATHS = {"/api/audit", "/api/audit/export.csv"}


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
    export_b = Export(study_id=study_b.id, filters={"site_ids": None}, formats=["csv"])
    push_b = RedcapPush(study_id=study_b.id, filters={"site_ids": None})
    db.add_all([export_b, push_b])
    report_b = _report(study_b.id, site_b.id, participant_b.id)
    db.add(report_b)
    await db.flush()
    import_b = RedcapParticipantImport(connection_id=connection_b.id, settings={})
    db.add(import_b)
    await db.flush()
    protocol_b, visits_b = await sched.create_protocol(db, study_b, battery_b)
    visit_b = await sched.create_occurrence(db, participant_b, protocol_b, visits_b[0])
    task_b = await reminders.create_task(db, visit_b)
    rule_b = await reminders.create_rule(db, visits_b[0], study_b)
    message_b = await reminders.create_message(db, visit_b, rule_b)
    document_b = await consent.create_document(db, study_b, version=None)
    record_b = await consent.sign(db, participant_b, await consent.create_document(db, study_b))
    template_b = MessageTemplate(
        study_id=study_b.id, kind=TemplateKind.reminder, language="en", subject="s", body="b"
    )
    db.add(template_b)
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
            "import_id": import_b.id,
            "protocol_id": protocol_b.id,
            "visit_id": visit_b.id,
            "document_id": document_b.id,
            "record_id": record_b.id,
            "export_id": export_b.id,
            "push_id": push_b.id,
            "report_id": report_b.id,
            "template_id": template_b.id,
            "task_id": task_b.id,
            "rule_id": rule_b.id,
            "message_id": message_b.id,
            "user_id": coordinator_b.id,
        },
        headers_a=await factories.auth_headers(db, settings, coordinator_a),
    )


def _report(study_id: uuid.UUID, site_id: uuid.UUID, participant_id: uuid.UUID) -> Report:
    """A built participant report (its download still needs a signed link)."""
    return Report(
        study_id=study_id,
        kind=ReportKind.participant,
        subject_id=participant_id,
        site_ids=[str(site_id)],
        options={"participant_id": str(participant_id)},
        key=uuid.uuid4().hex,
        built_at=utcnow(),
        pdf=b"%PDF-1.4",
        pages=1,
        size_bytes=8,
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
            if names & STUDY_SCOPED and path not in GLOBAL_ROLE_PATHS:
                operations.append((method.upper(), path, params))
    return operations


def test_matrix_covers_the_study_routes(app_instance: FastAPI) -> None:
    covered = {f"{m} {p}" for m, p, _ in study_scoped_operations(app_instance)}
    # A floor, not the list: the list is whatever the app serves.
    assert "GET /api/studies/{study_id}" in covered
    assert "POST /api/participants/import" in covered
    assert "PUT /api/participants/{participant_id}/contact" in covered
    assert {"POST /api/reports", "GET /api/reports/{report_id}/download"} <= covered
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


# The cross-SITE matrix: one study, sites A and B, a coordinator limited to site A. Parameters
# whose value belongs to one site of a study (the study-wide REDCap connection is of no site,
# but the world here gives each site its own).
SITE_SCOPED = {
    "site_id",
    "participant_id",
    "submission_id",
    "job_id",
    "connection_id",
    "import_id",
    "visit_id",
    "document_id",  # each site has a consent document of its own here
    "record_id",
    "export_id",
    "push_id",  # a push of this site's sessions alone
    "report_id",
    "task_id",
    "message_id",  # a failed one: resent on the own site, 409 when resent again
}


@dataclass
class Sites:
    ids: dict[str, dict[str, uuid.UUID]]  # "A" / "B": parameter name -> that site's object
    headers: dict[str, dict[str, str]]  # "scoped" (site A only) / "full" (the whole study)


async def _site_objects(
    db: AsyncSession, settings: Settings, study: Study, site: Site, battery: Battery
) -> dict[str, uuid.UUID]:
    participant = await factories.create_participant(db, site, email="p@example.org")
    session = await ingest.start_session(db, participant, battery)
    submission = Submission(
        client_submission_id=f"{site.code}-1",
        participant_id=participant.id,
        study_id=study.id,
        session_id=session.id,
        checksum="0" * 64,
        raw_payload=b"{}",
    )
    db.add(submission)
    await db.flush()
    job = OutboxEvent(
        topic="archive.submission", payload={}, study_id=study.id, subject_id=submission.id
    )
    connection = RedcapConnection(
        study_id=study.id,
        site_id=site.id,
        api_url="https://redcap.example.org/api/",
        token_encrypted=token_box(settings).encrypt("0" * 32),
        token_last4="0000",
    )
    # An export of this site alone: a site-scoped member of another site does not see it.
    export = Export(study_id=study.id, filters={"site_ids": [str(site.id)]}, formats=["csv"])
    push = RedcapPush(study_id=study.id, filters={"site_ids": [str(site.id)]})
    db.add_all([job, connection, export, push])
    report = _report(study.id, site.id, participant.id)
    db.add_all([job, connection, report])
    await db.flush()
    participant_import = RedcapParticipantImport(connection_id=connection.id, settings={})
    db.add_all([RedcapMapping(connection_id=connection.id, document=MAPPING), participant_import])
    await db.flush()
    protocol, visits = await sched.create_protocol(
        db, study, battery, version=protocol_version(site)
    )
    visit = await sched.create_occurrence(db, participant, protocol, visits[0])
    task = await reminders.create_task(db, visit)
    message = await reminders.create_message(
        db, visit, await reminders.create_rule(db, visits[0], study)
    )
    document = await consent.create_document(db, study, site=site, version=None)
    record = await consent.sign(
        db, participant, await consent.create_document(db, study, site=site)
    )
    return {
        "study_id": study.id,
        "battery_id": battery.id,
        "site_id": site.id,
        "participant_id": participant.id,
        "submission_id": submission.id,
        "job_id": job.id,
        "connection_id": connection.id,
        "import_id": participant_import.id,
        "protocol_id": protocol.id,
        "visit_id": visit.id,
        "document_id": document.id,
        "record_id": record.id,
        "export_id": export.id,
        "push_id": push.id,
        "report_id": report.id,
        "task_id": task.id,
        "message_id": message.id,
    }


def protocol_version(site: Site) -> int:
    return 1 if site.code == "A" else 2


# As PUT .../mapping stores it (the REDCap project it was checked against is not needed here).
MAPPING = {
    "record_id_field": "record_id",
    "record_id_source": "participant_code",
    "event": None,
    "repeating_instrument": None,
    "instance_rule": "per_submission",
    "fields": [{"source": "session.date", "field": "visit_date"}],
    "targets": {"visit_date": {"form": "visit", "field_type": "text", "validation": "date_ymd"}},
}


@pytest.fixture
async def sites(db: AsyncSession, settings: Settings) -> Sites:
    study = await factories.create_study(db)
    site_a = await factories.create_site(db, study, code="A")
    site_b = await factories.create_site(db, study, code="B")
    battery = await ingest.create_battery(db, study, await ingest.standard_modules(db))
    scoped, full = await factories.create_user(db), await factories.create_user(db)
    await factories.add_member(db, study, scoped, StudyRole.coordinator, sites=[site_a])
    await factories.add_member(db, study, full, StudyRole.coordinator)
    ids = {
        "A": await _site_objects(db, settings, study, site_a, battery),
        "B": await _site_objects(db, settings, study, site_b, battery),
    }
    for side in ids.values():
        side["user_id"] = full.id  # member routes: another member, the same on both sides
    return Sites(
        ids=ids,
        headers={
            "scoped": await factories.auth_headers(db, settings, scoped),
            "full": await factories.auth_headers(db, settings, full),
        },
    )


def site_scoped_operations(app: FastAPI) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """Deletions last: here they succeed, and would take their object from the routes after."""
    operations = [
        (method, path, params)
        for method, path, params in study_scoped_operations(app)
        if {p["name"] for p in params} & SITE_SCOPED
    ]
    return sorted(operations, key=lambda operation: operation[0] == "DELETE")


async def _call(
    client: AsyncClient,
    method: str,
    path: str,
    params: list[dict[str, Any]],
    ids: dict[str, uuid.UUID],
    headers: dict[str, str],
) -> tuple[int, str | None]:
    url, query = path, {}
    for param in params:
        value = ids.get(param["name"])
        if param["in"] == "path":
            url = url.replace("{" + param["name"] + "}", str(value))
        elif value is not None:
            query[param["name"]] = str(value)
    body = {} if method in ("POST", "PUT", "PATCH") else None
    response = await client.request(method, url, params=query, json=body, headers=headers)
    # A route may answer a file (the consent PDF): only JSON is an envelope.
    is_json = response.headers.get("content-type", "").startswith("application/json")
    envelope = response.json() if response.content and is_json else {}
    return response.status_code, envelope.get("error_code") if isinstance(envelope, dict) else None


def test_site_matrix_covers_the_participant_routes(app_instance: FastAPI) -> None:
    covered = {f"{m} {p}" for m, p, _ in site_scoped_operations(app_instance)}
    # A floor, not the list: the list is whatever the app serves.
    assert "GET /api/participants/{participant_id}/contact" in covered
    assert "GET /api/participants/{participant_id}/sessions" in covered
    assert "GET /api/submissions/{submission_id}" in covered
    assert "GET /api/redcap/connections/{connection_id}/preview" in covered
    assert "GET /api/reports/{report_id}" in covered
    assert len(covered) >= 20


async def test_site_scoped_coordinator_gets_404_on_every_route_of_the_other_site(
    client: AsyncClient, app_instance: FastAPI, sites: Sites
) -> None:
    """Own site: the route answers as it does for anyone (never 404). Other site: 404, like
    another study; or, for a route refused to site-scoped members whatever the object (403
    site_scoped on their own site too), that same 403, which tells nothing about the object."""
    failures = []
    for method, path, params in site_scoped_operations(app_instance):
        own = await _call(client, method, path, params, sites.ids["A"], sites.headers["scoped"])
        other = await _call(client, method, path, params, sites.ids["B"], sites.headers["scoped"])
        allowed = {(404, "not_found")}
        if own == (403, "site_scoped"):
            allowed.add(own)
        if own[0] == 404 or other not in allowed:
            failures.append(f"{method} {path}: own site {own}, other site {other}")
    assert not failures, "\n".join(failures)


async def test_full_study_member_sees_both_sites_on_every_route(
    client: AsyncClient, app_instance: FastAPI, sites: Sites
) -> None:
    failures = []
    for method, path, params in site_scoped_operations(app_instance):
        for side in ("A", "B"):
            status, code = await _call(
                client, method, path, params, sites.ids[side], sites.headers["full"]
            )
            if status in (403, 404):
                failures.append(f"{method} {path} site {side}: {status} {code}")
    assert not failures, "\n".join(failures)
