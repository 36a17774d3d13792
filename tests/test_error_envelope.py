"""Every error answers with one envelope whose correlation id is the response's X-Request-ID."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.core.db import get_db_session
from server.main import create_app
from server.studies.models import StudyRole
from tests.conftest import make_settings
from tests.factories import add_member, auth_headers, create_study, create_user
from tests.services import own_redis

_GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")


def _envelope(response: Response, status: int, error_code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"error_code", "message", "correlation_id", "details"}
    assert body["error_code"] == error_code
    assert isinstance(body["message"], str) and body["message"]
    assert body["correlation_id"]
    assert body["correlation_id"] == response.headers["x-request-id"]
    return body


@asynccontextmanager
async def _fresh_app(
    settings: Settings, app_instance: object, **overrides: object
) -> AsyncIterator[FastAPI]:
    """Another app object on the same db (the `client` fixture's override) and Redis."""
    assert isinstance(app_instance, FastAPI)
    app = create_app(make_settings(settings.DATABASE_URL, **overrides))
    app.dependency_overrides[get_db_session] = app_instance.dependency_overrides[get_db_session]
    try:
        yield app
    finally:
        await app.state.engine.dispose()
        if app.state.redis is not None:
            await app.state.redis.aclose()


# --- one case per status -------------------------------------------------------------------


async def test_401(client: AsyncClient) -> None:
    response = await client.get("/api/studies")

    _envelope(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_403_non_admin_creating_a_study(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    user = await create_user(db)

    response = await client.post(
        "/api/studies",
        json={"code": f"S{uuid.uuid4().hex[:6]}", "name": "Nope"},
        headers=await auth_headers(db, settings, user),
    )

    _envelope(response, 403, "forbidden")


async def test_404_study_the_coordinator_is_not_a_member_of(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    coordinator = await create_user(db)
    own_study = await create_study(db)
    others_study = await create_study(db)
    await add_member(db, own_study, coordinator, StudyRole.coordinator)
    headers = await auth_headers(db, settings, coordinator)

    unknown = await client.get(f"/api/studies/{uuid.uuid4()}", headers=headers)
    not_mine = await client.get(f"/api/studies/{others_study.id}", headers=headers)
    mine = await client.get(f"/api/studies/{own_study.id}", headers=headers)

    first = _envelope(unknown, 404, "not_found")
    second = _envelope(not_mine, 404, "not_found")
    # Someone else's study is indistinguishable from one that does not exist.
    assert first["message"] == second["message"]
    assert first["correlation_id"] != second["correlation_id"]
    assert mine.status_code == 200


async def test_404_unknown_route(client: AsyncClient) -> None:
    _envelope(await client.get("/api/nope"), 404, "not_found")


async def test_405_wrong_method(client: AsyncClient) -> None:
    response = await client.delete("/api/auth/me")

    _envelope(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


async def test_409_duplicate_study_code(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    admin = await create_user(db, is_admin=True)
    existing = await create_study(db)

    response = await client.post(
        "/api/studies",
        json={"code": existing.code, "name": "Again"},
        headers=await auth_headers(db, settings, admin),
    )

    _envelope(response, 409, "study_code_taken")


async def test_409_duplicate_user_email(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    admin = await create_user(db, is_admin=True)
    existing = await create_user(db, email=f"taken-{uuid.uuid4().hex[:8]}@example.org")

    response = await client.post(
        "/api/users",
        json={"email": existing.email.upper(), "password": "Violet-staple-orbit-93"},
        headers=await auth_headers(db, settings, admin),
    )

    _envelope(response, 409, "email_taken")
    assert "Violet-staple-orbit-93" not in response.text


async def test_422_malformed_json(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    admin = await create_user(db, is_admin=True)

    response = await client.post(
        "/api/studies",
        content=b'{"code": "S1", "name": ',
        headers={**await auth_headers(db, settings, admin), "Content-Type": "application/json"},
    )

    body = _envelope(response, 422, "validation_error")
    assert isinstance(body["details"], list) and body["details"]
    assert body["details"][0]["loc"][0] == "body"


async def test_422_wrong_types_name_each_field(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    admin = await create_user(db, is_admin=True)

    response = await client.post(
        "/api/studies",
        json={"code": 123, "name": ["not", "a", "string"]},
        headers=await auth_headers(db, settings, admin),
    )

    body = _envelope(response, 422, "validation_error")
    assert isinstance(body["details"], list)
    locs = [d["loc"] for d in body["details"]]
    assert ["body", "code"] in locs
    assert ["body", "name"] in locs
    for detail in body["details"]:
        assert set(detail) == {"loc", "msg", "type"}


_CANARY = "Leak-Canary-Pa55word-7f3e"


@pytest.mark.parametrize(
    ("content", "expected_code"),
    [
        (f'{{"email": "not-an-email", "password": "{_CANARY}"}}', "validation_error"),
        (f'{{"email": "ok@example.org", "password": "{_CANARY}{"x" * 260}"}}', "validation_error"),
        (f'{{"email": "ok@example.org", "password": "{_CANARY}",}}', "validation_error"),
        (f'{{"email": "ok@example.org", "password": ["{_CANARY}"]}}', "validation_error"),
        (
            f'{{"email": "ok@example.org", "password": "{_CANARY}", "is_admin": "maybe"}}',
            "validation_error",
        ),
        (
            '{"email": "leak-canary-pa55word-7f3e@example.org", "password": "' + _CANARY + '"}',
            "weak_password",
        ),
    ],
    ids=["bad_email", "too_long", "bad_json", "wrong_type", "other_field", "weak"],
)
async def test_422_never_echoes_the_submitted_password(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    content: str,
    expected_code: str,
) -> None:
    admin = await create_user(db, is_admin=True)

    response = await client.post(
        "/api/users",
        content=content.encode(),
        headers={**await auth_headers(db, settings, admin), "Content-Type": "application/json"},
    )

    _envelope(response, 422, expected_code)
    assert _CANARY not in response.text
    assert _CANARY.lower() not in response.text.lower()


async def test_422_login_form_never_echoes_the_password(client: AsyncClient) -> None:
    response = await client.post("/api/auth/login", data={"password": _CANARY})

    _envelope(response, 422, "validation_error")
    assert _CANARY not in response.text


async def test_429(client: AsyncClient, settings: Settings, app_instance: object) -> None:
    # A redis-server of its own: other test runs flush the shared test database number.
    with own_redis() as (_proc, port):
        async with _fresh_app(
            settings,
            app_instance,
            REDIS_URL=f"redis://127.0.0.1:{port}/0",
            RATE_LIMIT_DEFAULT="1/minute",
        ) as app:
            transport = ASGITransport(app=app, client=("10.1.2.3", 40000))
            async with AsyncClient(transport=transport, base_url="http://testserver") as http:
                first = await http.get("/api/studies")
                second = await http.get("/api/studies")
                supplied = await http.get("/api/studies", headers={"X-Request-ID": "abc-123"})

    _envelope(first, 401, "unauthorized")
    body = _envelope(second, 429, "rate_limited")
    assert body["details"]["scope"] == "default"
    assert 1 <= int(second.headers["retry-after"]) <= 60
    assert _envelope(supplied, 429, "rate_limited")["correlation_id"] == "abc-123"


async def test_500_is_an_envelope_without_the_exception_text(
    client: AsyncClient, settings: Settings, app_instance: object
) -> None:
    async with _fresh_app(settings, app_instance) as app:

        @app.get("/api/test-boom")
        async def boom() -> None:
            raise RuntimeError("secret internals: patient 0042")

        transport = ASGITransport(app=app, client=("10.1.2.3", 40000), raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            generated = await http.get("/api/test-boom")
            supplied = await http.get("/api/test-boom", headers={"X-Request-ID": "boom-1"})

    body = _envelope(generated, 500, "internal_error")
    assert _GENERATED_ID.match(body["correlation_id"])
    assert "secret internals" not in generated.text
    assert "RuntimeError" not in generated.text
    assert _envelope(supplied, 500, "internal_error")["correlation_id"] == "boom-1"


# --- the correlation id ------------------------------------------------------------------


async def test_generated_request_ids_differ_per_request(client: AsyncClient) -> None:
    first = _envelope(await client.get("/api/nope"), 404, "not_found")
    second = _envelope(await client.get("/api/nope"), 404, "not_found")

    assert _GENERATED_ID.match(first["correlation_id"])
    assert first["correlation_id"] != second["correlation_id"]


async def test_client_request_id_is_echoed(client: AsyncClient) -> None:
    error = await client.get("/api/studies", headers={"X-Request-ID": "abc-123"})
    success = await client.get("/api/health", headers={"X-Request-ID": "abc-123"})

    assert _envelope(error, 401, "unauthorized")["correlation_id"] == "abc-123"
    assert success.status_code == 200
    assert success.headers["x-request-id"] == "abc-123"


async def test_client_request_id_with_every_allowed_character_is_kept(
    client: AsyncClient,
) -> None:
    plain = "Az09._:-" + "x" * 120  # 128 characters, the longest kept

    body = _envelope(
        await client.get("/api/nope", headers={"X-Request-ID": plain}), 404, "not_found"
    )

    assert body["correlation_id"] == plain


@pytest.mark.parametrize(
    "supplied",
    [
        "a" * 300,
        "a" * 129,
        "abc 123",
        "abc;rm -rf",
        "<script>alert(1)</script>",
        "id\tx",
        "é-accent",
        "",
    ],
    ids=["300_chars", "129_chars", "space", "semicolon", "markup", "tab", "latin1", "empty"],
)
async def test_unsafe_client_request_id_is_replaced(client: AsyncClient, supplied: str) -> None:
    response = await client.get(
        "/api/studies", headers=[(b"X-Request-ID", supplied.encode("latin-1"))]
    )

    body = _envelope(response, 401, "unauthorized")
    assert body["correlation_id"] != supplied
    assert _GENERATED_ID.match(body["correlation_id"])


async def test_request_id_with_a_trailing_newline_is_replaced(client: AsyncClient) -> None:
    response = await client.get("/api/studies", headers=[(b"X-Request-ID", b"abc-123\n")])

    body = _envelope(response, 401, "unauthorized")
    assert "\n" not in response.headers["x-request-id"]
    assert _GENERATED_ID.match(body["correlation_id"])
