"""Staff accounts, managed by administrators through /api/users."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from httpx import AsyncClient, Response
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from tests.factories import DEFAULT_PASSWORD, auth_headers, create_user

USERS = "/api/users"
GOOD_PASSWORD = "Violet-staple-orbit-93"


def _envelope(response: Response, status: int, error_code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error_code", "message", "correlation_id", "details"}
    assert body["error_code"] == error_code
    assert body["correlation_id"] and body["correlation_id"] == response.headers["x-request-id"]
    return body


def _email(prefix: str = "staff") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.org"


async def _login(client: AsyncClient, email: str, password: str = DEFAULT_PASSWORD) -> Response:
    return await client.post("/api/auth/login", data={"username": email, "password": password})


async def test_admin_lists_users(client: AsyncClient, db: AsyncSession, settings: Settings) -> None:
    admin = await create_user(db, is_admin=True)
    alice = await create_user(db, email=_email("alice"))
    bob = await create_user(db, email=_email("bob"), is_active=False)

    response = await client.get(USERS, headers=await auth_headers(db, settings, admin))

    assert response.status_code == 200, response.text
    users = {u["email"]: u for u in response.json()}
    assert {admin.email, alice.email, bob.email} <= set(users)
    assert users[alice.email]["id"] == str(alice.id)
    assert users[alice.email]["is_active"] is True
    assert users[bob.email]["is_active"] is False
    assert users[admin.email]["is_admin"] is True
    assert "password_hash" not in response.text
    assert "$argon2" not in response.text


async def test_admin_creates_a_user(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    admin = await create_user(db, is_admin=True)
    headers = await auth_headers(db, settings, admin)
    email = _email("NewPerson")

    created = await client.post(
        USERS,
        json={"email": email, "password": GOOD_PASSWORD, "display_name": "New Person"},
        headers=headers,
    )

    assert created.status_code == 201, created.text
    body = created.json()
    assert body["email"] == email.lower()
    assert body["display_name"] == "New Person"
    assert body["is_admin"] is False
    assert body["is_active"] is True
    assert GOOD_PASSWORD not in created.text and "password" not in body
    fetched = await client.get(f"{USERS}/{body['id']}", headers=headers)
    assert fetched.status_code == 200
    assert fetched.json() == body
    login = await _login(client, email, GOOD_PASSWORD)
    assert login.status_code == 200, login.text


async def test_admin_can_create_another_admin(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    admin = await create_user(db, is_admin=True)

    created = await client.post(
        USERS,
        json={"email": _email(), "password": GOOD_PASSWORD, "is_admin": True},
        headers=await auth_headers(db, settings, admin),
    )

    assert created.status_code == 201, created.text
    assert created.json()["is_admin"] is True


async def test_admin_updates_a_user(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    admin = await create_user(db, is_admin=True)
    user = await create_user(db)
    headers = await auth_headers(db, settings, admin)

    response = await client.patch(
        f"{USERS}/{user.id}", json={"display_name": "Renamed", "is_admin": True}, headers=headers
    )

    assert response.status_code == 200, response.text
    assert response.json()["display_name"] == "Renamed"
    assert response.json()["is_admin"] is True
    fetched = (await client.get(f"{USERS}/{user.id}", headers=headers)).json()
    assert fetched["display_name"] == "Renamed"
    assert fetched["is_admin"] is True
    # The promotion takes effect: the user may now do admin things.
    as_user = await client.get(USERS, headers=await auth_headers(db, settings, user))
    assert as_user.status_code == 200


async def test_an_empty_update_changes_nothing(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    admin = await create_user(db, is_admin=True)
    user = await create_user(db)
    headers = await auth_headers(db, settings, admin)
    before = (await client.get(f"{USERS}/{user.id}", headers=headers)).json()

    response = await client.patch(f"{USERS}/{user.id}", json={}, headers=headers)

    assert response.status_code == 200, response.text
    assert response.json() == before


async def test_admin_resets_a_password(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    admin = await create_user(db, is_admin=True)
    user = await create_user(db)

    response = await client.patch(
        f"{USERS}/{user.id}",
        json={"password": GOOD_PASSWORD},
        headers=await auth_headers(db, settings, admin),
    )

    assert response.status_code == 200, response.text
    assert (await _login(client, user.email, GOOD_PASSWORD)).status_code == 200
    _envelope(await _login(client, user.email), 401, "invalid_credentials")


async def test_password_reset_follows_the_password_rules(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    admin = await create_user(db, is_admin=True)
    user = await create_user(db)

    response = await client.patch(
        f"{USERS}/{user.id}",
        json={"password": "short"},
        headers=await auth_headers(db, settings, admin),
    )

    body = _envelope(response, 422, "weak_password")
    assert body["details"][0]["loc"] == ["body", "password"]
    # The old password still works.
    assert (await _login(client, user.email)).status_code == 200


async def test_unknown_user_is_404(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    admin = await create_user(db, is_admin=True)
    headers = await auth_headers(db, settings, admin)

    _envelope(await client.get(f"{USERS}/{uuid.uuid4()}", headers=headers), 404, "not_found")
    patched = await client.patch(
        f"{USERS}/{uuid.uuid4()}", json={"display_name": "x"}, headers=headers
    )
    _envelope(patched, 404, "not_found")


async def test_duplicate_email_is_409(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    admin = await create_user(db, is_admin=True)
    existing = await create_user(db)

    response = await client.post(
        USERS,
        json={"email": existing.email.upper(), "password": GOOD_PASSWORD},
        headers=await auth_headers(db, settings, admin),
    )

    _envelope(response, 409, "email_taken")


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("GET", USERS, None),
        ("POST", USERS, {"email": "x-new@example.org", "password": GOOD_PASSWORD}),
        ("GET", f"{USERS}/{{user_id}}", None),
        ("PATCH", f"{USERS}/{{user_id}}", {"is_admin": True}),
    ],
    ids=["list", "create", "get", "update"],
)
async def test_non_admin_gets_403(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    method: str,
    path: str,
    payload: dict[str, Any] | None,
) -> None:
    user = await create_user(db)

    response = await client.request(
        method,
        path.format(user_id=user.id),
        json=payload,
        headers=await auth_headers(db, settings, user),
    )

    _envelope(response, 403, "forbidden")
    # Not even on themselves: a non-admin cannot make themselves an admin.
    me = await client.get("/api/auth/me", headers=await auth_headers(db, settings, user))
    assert me.json()["is_admin"] is False


async def test_users_need_a_login(client: AsyncClient) -> None:
    response = await client.get(USERS)

    _envelope(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_disabling_a_user_ends_their_existing_tokens(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    admin = await create_user(db, is_admin=True)
    user = await create_user(db)
    login = await _login(client, user.email)
    assert login.status_code == 200, login.text
    tokens = login.json()
    user_headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (await client.get("/api/auth/me", headers=user_headers)).status_code == 200

    disabled = await client.patch(
        f"{USERS}/{user.id}",
        json={"is_active": False},
        headers=await auth_headers(db, settings, admin),
    )

    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["is_active"] is False
    _envelope(await client.get("/api/auth/me", headers=user_headers), 401, "unauthorized")
    refreshed = await client.post(
        "/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    _envelope(refreshed, 401, "unauthorized")
    _envelope(await _login(client, user.email), 401, "invalid_credentials")


async def test_re_enabling_a_user_lets_them_log_in_again(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    admin = await create_user(db, is_admin=True)
    user = await create_user(db, is_active=False)
    _envelope(await _login(client, user.email), 401, "invalid_credentials")

    enabled = await client.patch(
        f"{USERS}/{user.id}",
        json={"is_active": True},
        headers=await auth_headers(db, settings, admin),
    )

    assert enabled.status_code == 200, enabled.text
    assert (await _login(client, user.email)).status_code == 200
