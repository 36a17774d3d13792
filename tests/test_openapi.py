"""The OpenAPI document tells the truth about errors and tokens: what /docs shows and tries."""

from __future__ import annotations

import gzip
import uuid
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from tests import factories
from tests import ingest_factories as ingest

ENVELOPE_REF = "#/components/schemas/ErrorEnvelope"
PARTICIPANT = [{"ParticipantToken": []}]
STAFF = [{"OAuth2PasswordBearer": []}]


def _operation(app: FastAPI, method: str, path: str) -> dict[str, Any]:
    operation: dict[str, Any] = app.openapi()["paths"][path][method]
    return operation


def _error_schema(operation: dict[str, Any], status: str) -> Any:
    return operation["responses"][status]["content"]["application/json"]["schema"]


@pytest.mark.parametrize(
    ("path", "documented", "not_documented"),
    [
        ("/api/submit", {"200", "201", "401", "404", "409", "413", "415", "422"}, set()),
        ("/api/sync", {"200", "401", "413", "415", "422"}, {"409"}),  # conflicts are per item
    ],
)
def test_ingest_routes_document_their_errors_with_the_envelope(
    app_instance: FastAPI, path: str, documented: set[str], not_documented: set[str]
) -> None:
    operation = _operation(app_instance, "post", path)
    assert documented <= set(operation["responses"]), operation["responses"].keys()
    assert not (not_documented & set(operation["responses"]))
    for status in documented - {"200", "201"}:
        assert _error_schema(operation, status) == {"$ref": ENVELOPE_REF}, status
        assert operation["responses"][status]["description"] not in ("", "Error")


def test_the_envelope_schema_names_its_four_fields(app_instance: FastAPI) -> None:
    envelope = app_instance.openapi()["components"]["schemas"]["ErrorEnvelope"]
    assert set(envelope["properties"]) == {"error_code", "message", "correlation_id", "details"}
    assert set(envelope["required"]) >= {"error_code", "message", "correlation_id", "details"}


def test_every_422_is_documented_as_the_envelope(app_instance: FastAPI) -> None:
    document = app_instance.openapi()
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            if "422" in operation["responses"]:
                assert _error_schema(operation, "422") == {"$ref": ENVELOPE_REF}, (method, path)
    # FastAPI's own shape ({"detail": [...]}) is never what the app answers.
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_participant_routes_take_the_participant_token_and_staff_routes_the_staff_one(
    app_instance: FastAPI,
) -> None:
    schemes = app_instance.openapi()["components"]["securitySchemes"]
    assert schemes["ParticipantToken"]["type"] == "http"
    assert schemes["ParticipantToken"]["scheme"] == "bearer"
    assert "/api/participants/auth" in schemes["ParticipantToken"]["description"]
    assert schemes["OAuth2PasswordBearer"]["flows"]["password"]["tokenUrl"] == "/api/auth/login"
    for method, path in [
        ("post", "/api/submit"),
        ("post", "/api/sync"),
        ("post", "/api/session/start"),
        ("post", "/api/session/end"),
        ("get", "/api/session/{session_id}"),
    ]:
        assert _operation(app_instance, method, path)["security"] == PARTICIPANT, path
    for method, path in [
        ("get", "/api/studies"),
        ("get", "/api/participants/{participant_id}/sessions"),
        ("get", "/api/submissions/{submission_id}"),
    ]:
        assert _operation(app_instance, method, path)["security"] == STAFF, path
    assert "security" not in _operation(app_instance, "post", "/api/participants/auth")


async def test_the_documented_errors_are_what_the_ingest_routes_answer(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study = await factories.create_study(db)
    participant = await factories.create_participant(db, await factories.create_site(db, study))
    modules = await ingest.standard_modules(db)
    session = await ingest.start_session(
        db, participant, await ingest.create_battery(db, study, modules)
    )
    headers = await ingest.participant_headers(db, settings, participant)
    body = ingest.payload(session.id, modules, n_trials=3)
    assert (await client.post("/api/submit", json=body, headers=headers)).status_code == 201
    changed = {**body, "client_submitted_at": "2020-01-01T00:00:00Z"}
    unknown_session = ingest.payload(uuid.uuid4(), modules, n_trials=3)
    huge = b'{"items": [' + b" " * (settings.MAX_SYNC_BYTES + 1) + b"]}"
    answers = {
        "submit 401": await client.post("/api/submit", json=body),
        "submit 404": await client.post("/api/submit", json=unknown_session, headers=headers),
        "submit 409": await client.post("/api/submit", json=changed, headers=headers),
        "submit 413": await client.post(
            "/api/submit",
            content=gzip.compress(b" " * (settings.MAX_SUBMISSION_BYTES + 1)),
            headers={**headers, "Content-Encoding": "gzip"},
        ),
        "submit 415": await client.post(
            "/api/submit", content=orjson.dumps(body), headers={**headers, "Content-Encoding": "br"}
        ),
        "submit 422": await client.post("/api/submit", content=b"{", headers=headers),
        "sync 413": await client.post("/api/sync", content=huge, headers=headers),
        "sync 415": await client.post(
            "/api/sync", content=b"{}", headers={**headers, "Content-Encoding": "deflate"}
        ),
        "sync 422": await client.post("/api/sync", json={"items": []}, headers=headers),
    }
    for name, response in answers.items():
        assert response.status_code == int(name[-3:]), (name, response.text)
        assert set(response.json()) == {"error_code", "message", "correlation_id", "details"}


async def test_request_validation_errors_of_any_kind_use_the_envelope(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    user = await factories.create_user(db, is_admin=True)
    staff = await factories.auth_headers(db, settings, user)
    study = {"study_id": str((await factories.create_study(db)).id)}
    answers = [
        await client.get("/api/studies/not-a-uuid", headers=staff),  # path parameter
        await client.get("/api/participants", params={**study, "limit": "many"}, headers=staff),
        await client.post("/api/participants/import", params=study, headers=staff),  # no file
    ]
    for response in answers:
        assert response.status_code == 422, response.text
        body = response.json()
        assert set(body) == {"error_code", "message", "correlation_id", "details"}
        assert body["error_code"] == "validation_error"
        assert body["details"] and {"loc", "msg", "type"} <= set(body["details"][0])
