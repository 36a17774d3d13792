"""A user's login sessions: listing them, ending one, ending all."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from httpx import AsyncClient, Response
from jose import jwt
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.core.models import utcnow
from server.user_sessions.models import UserSession
from tests.factories import DEFAULT_PASSWORD, create_user

SESSIONS = "/api/user-sessions"
ME = "/api/auth/me"
REFRESH = "/api/auth/refresh"


def _envelope(response: Response, status: int, error_code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error_code", "message", "correlation_id", "details"}
    assert body["error_code"] == error_code
    assert body["correlation_id"] and body["correlation_id"] == response.headers["x-request-id"]
    return body


async def _login(client: AsyncClient, email: str, user_agent: str) -> dict[str, Any]:
    response = await client.post(
        "/api/auth/login",
        data={"username": email, "password": DEFAULT_PASSWORD},
        headers={"User-Agent": user_agent},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def _sid(settings: Settings, tokens: dict[str, Any]) -> str:
    claims = jwt.decode(tokens["access_token"], settings.JWT_SECRET_KEY.get_secret_value())
    return str(claims["sid"])


async def _refresh(client: AsyncClient, tokens: dict[str, Any]) -> Response:
    return await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})


async def test_two_logins_are_listed_with_the_current_one_marked(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    user = await create_user(db)
    phone = await _login(client, user.email, "phone-browser/1.0")
    laptop = await _login(client, user.email, "laptop-browser/2.0")

    response = await client.get(SESSIONS, headers=_bearer(phone))

    assert response.status_code == 200, response.text
    sessions = response.json()
    assert {s["id"] for s in sessions} == {_sid(settings, phone), _sid(settings, laptop)}
    by_id = {s["id"]: s for s in sessions}
    assert by_id[_sid(settings, phone)]["current"] is True
    assert by_id[_sid(settings, laptop)]["current"] is False
    assert by_id[_sid(settings, phone)]["user_agent"] == "phone-browser/1.0"
    assert by_id[_sid(settings, laptop)]["user_agent"] == "laptop-browser/2.0"
    for session in sessions:
        assert {"created_at", "last_used_at", "expires_at"} <= set(session)
        assert "refresh_token_hash" not in session and "refresh_token" not in session

    # Seen from the other login, the marks swap.
    other_view = (await client.get(SESSIONS, headers=_bearer(laptop))).json()
    assert [s["id"] for s in other_view if s["current"]] == [_sid(settings, laptop)]


async def test_sessions_of_other_users_are_not_listed(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    user = await create_user(db)
    other = await create_user(db)
    mine = await _login(client, user.email, "mine")
    await _login(client, other.email, "theirs")

    sessions = (await client.get(SESSIONS, headers=_bearer(mine))).json()

    assert [s["id"] for s in sessions] == [_sid(settings, mine)]


async def test_revoking_another_session_ends_its_tokens(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    user = await create_user(db)
    current = await _login(client, user.email, "current")
    other = await _login(client, user.email, "other")
    assert (await client.get(ME, headers=_bearer(other))).status_code == 200

    response = await client.delete(f"{SESSIONS}/{_sid(settings, other)}", headers=_bearer(current))

    assert response.status_code == 204
    _envelope(await client.get(ME, headers=_bearer(other)), 401, "unauthorized")
    _envelope(await _refresh(client, other), 401, "unauthorized")
    # The session doing the revoking carries on, and the revoked one is no longer listed.
    listed = await client.get(SESSIONS, headers=_bearer(current))
    assert listed.status_code == 200
    assert [s["id"] for s in listed.json()] == [_sid(settings, current)]
    assert (await _refresh(client, current)).status_code == 200


async def test_revoking_the_current_session_signs_it_out(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    user = await create_user(db)
    tokens = await _login(client, user.email, "only")

    response = await client.delete(f"{SESSIONS}/{_sid(settings, tokens)}", headers=_bearer(tokens))

    assert response.status_code == 204
    _envelope(await client.get(ME, headers=_bearer(tokens)), 401, "unauthorized")


async def test_another_users_session_id_is_404_and_left_alone(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    user = await create_user(db)
    victim = await create_user(db)
    mine = await _login(client, user.email, "attacker")
    theirs = await _login(client, victim.email, "victim")

    response = await client.delete(f"{SESSIONS}/{_sid(settings, theirs)}", headers=_bearer(mine))
    unknown = await client.delete(f"{SESSIONS}/{uuid.uuid4()}", headers=_bearer(mine))

    body = _envelope(response, 404, "not_found")
    # Indistinguishable from an id that does not exist at all.
    assert body["message"] == _envelope(unknown, 404, "not_found")["message"]
    assert (await client.get(ME, headers=_bearer(theirs))).status_code == 200
    assert (await _refresh(client, theirs)).status_code == 200


async def test_malformed_session_id_is_422(client: AsyncClient, db: AsyncSession) -> None:
    user = await create_user(db)
    tokens = await _login(client, user.email, "ua")

    response = await client.delete(f"{SESSIONS}/not-a-uuid", headers=_bearer(tokens))

    body = _envelope(response, 422, "validation_error")
    assert body["details"][0]["loc"] == ["path", "session_id"]


async def test_sign_out_everywhere(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    user = await create_user(db)
    bystander = await create_user(db)
    logins = [await _login(client, user.email, f"device-{n}") for n in range(3)]
    unrelated = await _login(client, bystander.email, "bystander")

    response = await client.delete(SESSIONS, headers=_bearer(logins[0]))

    assert response.status_code == 204
    for tokens in logins:
        _envelope(await client.get(ME, headers=_bearer(tokens)), 401, "unauthorized")
        _envelope(await _refresh(client, tokens), 401, "unauthorized")
    # Another user's logins are untouched.
    assert (await client.get(ME, headers=_bearer(unrelated))).status_code == 200
    # A fresh login works again and is then the only session listed.
    fresh = await _login(client, user.email, "fresh")
    listed = (await client.get(SESSIONS, headers=_bearer(fresh))).json()
    assert [s["id"] for s in listed] == [_sid(settings, fresh)]


async def test_expired_session_ends_its_tokens(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    user = await create_user(db)
    stale = await _login(client, user.email, "stale")
    live = await _login(client, user.email, "live")
    session = await db.get(UserSession, uuid.UUID(_sid(settings, stale)))
    assert session is not None
    session.expires_at = utcnow() - timedelta(seconds=1)
    await db.flush()

    _envelope(await client.get(ME, headers=_bearer(stale)), 401, "unauthorized")
    _envelope(await _refresh(client, stale), 401, "unauthorized")
    listed = (await client.get(SESSIONS, headers=_bearer(live))).json()
    assert [s["id"] for s in listed] == [_sid(settings, live)]


async def test_listing_sessions_needs_a_login(client: AsyncClient) -> None:
    response = await client.get(SESSIONS)

    _envelope(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    _envelope(await client.delete(SESSIONS), 401, "unauthorized")
