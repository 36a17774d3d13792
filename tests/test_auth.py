"""Login, tokens, refresh rotation, logout and password rules, seen through HTTP."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response
from jose import jwt
from passlib.context import CryptContext
from passlib.exc import MissingBackendError
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.core.models import utcnow
from server.core.security import create_access_token
from server.user_sessions import service as sessions_service
from server.users.models import User
from tests.factories import DEFAULT_PASSWORD, auth_headers, create_user

LOGIN = "/api/auth/login"
ME = "/api/auth/me"
REFRESH = "/api/auth/refresh"
LOGOUT = "/api/auth/logout"

# What passlib's CryptContext(schemes=["bcrypt"]).hash(DEFAULT_PASSWORD, rounds=4) produced on a
# machine with the bcrypt backend; used when this environment has no bcrypt backend to make one.
_BCRYPT_OF_DEFAULT_PASSWORD = "$2b$04$gO6T30v5DzIt6WucQy0Uy.QckvtLAa3IQ5IYYMPl9opYj6EPBsOe."


def _envelope(response: Response, status: int, error_code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error_code", "message", "correlation_id", "details"}
    assert body["error_code"] == error_code
    assert body["correlation_id"] and body["correlation_id"] == response.headers["x-request-id"]
    return body


async def _login(client: AsyncClient, email: str, password: str = DEFAULT_PASSWORD) -> Response:
    return await client.post(LOGIN, data={"username": email, "password": password})


async def _tokens(client: AsyncClient, email: str) -> dict[str, Any]:
    response = await _login(client, email)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# --- login -------------------------------------------------------------------------------


async def test_login_returns_a_bearer_token_pair(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    user = await create_user(db)

    response = await _login(client, user.email)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.ACCESS_TOKEN_EXPIRE_MINUTES * 60
    assert isinstance(body["refresh_token"], str) and len(body["refresh_token"]) >= 32
    assert body["refresh_token"] != body["access_token"]

    claims = jwt.decode(
        body["access_token"],
        settings.JWT_SECRET_KEY.get_secret_value(),
        algorithms=[settings.JWT_ALGORITHM],
    )
    assert {"exp", "iat", "sub", "jti", "sid"} <= set(claims)
    assert claims["sub"] == str(user.id)
    assert claims["exp"] - claims["iat"] == settings.ACCESS_TOKEN_EXPIRE_MINUTES * 60
    uuid.UUID(claims["sid"])
    assert jwt.get_unverified_header(body["access_token"])["alg"] == settings.JWT_ALGORITHM


async def test_each_login_gets_its_own_session_and_token_id(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    user = await create_user(db)
    secret = settings.JWT_SECRET_KEY.get_secret_value()

    first = jwt.decode((await _tokens(client, user.email))["access_token"], secret)
    second = jwt.decode((await _tokens(client, user.email))["access_token"], secret)

    assert first["sid"] != second["sid"]
    assert first["jti"] != second["jti"]


async def test_wrong_password_and_unknown_email_look_the_same(
    client: AsyncClient, db: AsyncSession
) -> None:
    user = await create_user(db)

    wrong_password = await _login(client, user.email, "not-the-right-password")
    unknown_email = await _login(client, f"nobody-{uuid.uuid4().hex[:8]}@example.org")

    first = _envelope(wrong_password, 401, "invalid_credentials")
    second = _envelope(unknown_email, 401, "invalid_credentials")
    assert first["message"] == second["message"]
    assert first["details"] == second["details"]
    assert wrong_password.headers["www-authenticate"] == "Bearer"
    assert unknown_email.headers["www-authenticate"] == "Bearer"


async def test_disabled_user_cannot_log_in_even_with_the_right_password(
    client: AsyncClient, db: AsyncSession
) -> None:
    user = await create_user(db, is_active=False)
    wrong = _envelope(
        await _login(client, user.email, "not-the-right-password"), 401, "invalid_credentials"
    )

    body = _envelope(await _login(client, user.email), 401, "invalid_credentials")

    # Nothing tells an attacker the account exists but is disabled.
    assert body["message"] == wrong["message"]


async def test_login_email_is_case_insensitive(client: AsyncClient, db: AsyncSession) -> None:
    user = await create_user(db, email=f"mixed-{uuid.uuid4().hex[:8]}@example.org")

    response = await _login(client, f"  {user.email.upper()} ")

    assert response.status_code == 200, response.text
    me = await client.get(ME, headers=_bearer(response.json()["access_token"]))
    assert me.json()["email"] == user.email


async def test_login_with_missing_fields_is_a_422_envelope(client: AsyncClient) -> None:
    response = await client.post(LOGIN, data={"username": "someone@example.org"})

    body = _envelope(response, 422, "validation_error")
    assert ["body", "password"] in [d["loc"] for d in body["details"]]


# --- /me and bearer tokens -----------------------------------------------------------------


async def test_me_answers_with_the_logged_in_user(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    user = await create_user(db, is_admin=True)
    tokens = await _tokens(client, user.email)

    response = await client.get(ME, headers=_bearer(tokens["access_token"]))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == str(user.id)
    assert body["email"] == user.email
    assert body["is_admin"] is True
    assert "password_hash" not in body and "password" not in body
    sid = jwt.decode(tokens["access_token"], settings.JWT_SECRET_KEY.get_secret_value())["sid"]
    assert body["session_id"] == sid


async def test_me_without_a_token_is_401(client: AsyncClient) -> None:
    response = await client.get(ME)

    _envelope(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer not-a-jwt",
        "Bearer a.b.c",
        "Bearer " + "x" * 500,
        "Basic dXNlcjpwYXNz",
    ],
)
async def test_garbage_bearer_is_401_with_challenge(
    client: AsyncClient, authorization: str
) -> None:
    response = await client.get(ME, headers={"Authorization": authorization})

    _envelope(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def _live_claims(db: AsyncSession, settings: Settings, user: User) -> dict[str, Any]:
    session, _ = await sessions_service.open_session(
        db, settings, user_id=user.id, user_agent="tests"
    )
    now = int(utcnow().timestamp())
    return {
        "sub": str(user.id),
        "sid": str(session.id),
        "jti": uuid.uuid4().hex,
        "typ": "user",
        "iat": now,
        "exp": now + 300,
    }


async def test_a_correctly_signed_token_for_a_live_session_is_accepted(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    # The control for the forgeries below: the same claims, signed as the server signs.
    user = await create_user(db)
    claims = await _live_claims(db, settings, user)
    token = jwt.encode(claims, settings.JWT_SECRET_KEY.get_secret_value(), algorithm="HS256")

    response = await client.get(ME, headers=_bearer(token))

    assert response.status_code == 200, response.text
    assert response.json()["id"] == str(user.id)


@pytest.mark.parametrize("forgery", ["alg_none", "other_secret", "hs512_header", "no_signature"])
async def test_forged_tokens_are_401(
    client: AsyncClient, db: AsyncSession, settings: Settings, forgery: str
) -> None:
    assert settings.JWT_ALGORITHM == "HS256"
    user = await create_user(db)
    claims = await _live_claims(db, settings, user)
    secret = settings.JWT_SECRET_KEY.get_secret_value()
    if forgery == "alg_none":
        token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    elif forgery == "other_secret":
        token = jwt.encode(claims, "another-secret-" + "y" * 40, algorithm="HS256")
    elif forgery == "hs512_header":
        token = jwt.encode(claims, secret, algorithm="HS512")
    else:
        header, payload, _signature = jwt.encode(claims, secret, algorithm="HS256").split(".")
        token = f"{header}.{payload}."

    response = await client.get(ME, headers=_bearer(token))

    _envelope(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_expired_access_token_is_401(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    user = await create_user(db)
    session, _ = await sessions_service.open_session(
        db, settings, user_id=user.id, user_agent="tests"
    )
    expired, _ = create_access_token(
        settings, subject=user.id, session_id=session.id, expires_in=timedelta(seconds=-1)
    )
    fresh, _ = create_access_token(settings, subject=user.id, session_id=session.id)

    _envelope(await client.get(ME, headers=_bearer(expired)), 401, "unauthorized")
    assert (await client.get(ME, headers=_bearer(fresh))).status_code == 200


async def test_token_of_another_kind_is_not_a_user_token(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    user = await create_user(db)
    session, _ = await sessions_service.open_session(
        db, settings, user_id=user.id, user_agent="tests"
    )
    participant_token, _ = create_access_token(
        settings, subject=user.id, session_id=session.id, kind="participant"
    )
    unknown_kind, _ = create_access_token(
        settings, subject=user.id, session_id=session.id, kind="device"
    )

    # A participant's token is valid, only not here: 403, saying the route is for staff.
    body = _envelope(await client.get(ME, headers=_bearer(participant_token)), 403, "staff_only")
    assert "staff" in body["message"]
    _envelope(await client.get(ME, headers=_bearer(unknown_kind)), 401, "unauthorized")


async def test_token_naming_another_users_session_is_401(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    user = await create_user(db)
    other = await create_user(db)
    others_session, _ = await sessions_service.open_session(
        db, settings, user_id=other.id, user_agent="tests"
    )
    token, _ = create_access_token(settings, subject=user.id, session_id=others_session.id)

    _envelope(await client.get(ME, headers=_bearer(token)), 401, "unauthorized")


# --- refresh and logout ------------------------------------------------------------------


async def test_refresh_rotates_the_refresh_token(client: AsyncClient, db: AsyncSession) -> None:
    user = await create_user(db)
    first = await _tokens(client, user.email)

    response = await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})

    assert response.status_code == 200, response.text
    second = response.json()
    assert second["token_type"] == "bearer"
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    me = await client.get(ME, headers=_bearer(second["access_token"]))
    assert me.status_code == 200 and me.json()["id"] == str(user.id)

    third = await client.post(REFRESH, json={"refresh_token": second["refresh_token"]})
    assert third.status_code == 200, third.text
    # The old token is not a way back in (and replaying it ends the session: next test).
    replay = await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
    _envelope(replay, 401, "unauthorized")


async def test_refresh_with_an_unknown_token_is_401(client: AsyncClient) -> None:
    response = await client.post(REFRESH, json={"refresh_token": "z" * 43})

    _envelope(response, 401, "unauthorized")


async def test_logout_ends_the_access_token_at_once(client: AsyncClient, db: AsyncSession) -> None:
    user = await create_user(db)
    tokens = await _tokens(client, user.email)
    headers = _bearer(tokens["access_token"])
    assert (await client.get(ME, headers=headers)).status_code == 200

    logout = await client.post(LOGOUT, headers=headers)

    assert logout.status_code == 204
    _envelope(await client.get(ME, headers=headers), 401, "unauthorized")


async def test_refresh_after_logout_fails(client: AsyncClient, db: AsyncSession) -> None:
    user = await create_user(db)
    tokens = await _tokens(client, user.email)

    logout = await client.post(LOGOUT, headers=_bearer(tokens["access_token"]))
    assert logout.status_code == 204

    response = await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})
    _envelope(response, 401, "unauthorized")


async def test_logout_without_a_token_is_401(client: AsyncClient) -> None:
    _envelope(await client.post(LOGOUT), 401, "unauthorized")


async def test_logout_ends_only_that_login(client: AsyncClient, db: AsyncSession) -> None:
    user = await create_user(db)
    phone = await _tokens(client, user.email)
    laptop = await _tokens(client, user.email)

    assert (await client.post(LOGOUT, headers=_bearer(phone["access_token"]))).status_code == 204

    assert (await client.get(ME, headers=_bearer(laptop["access_token"]))).status_code == 200


# --- password rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local_part", "password"),
    [
        ("shorty", "Ab1-short"),
        ("jonathan.q", "my-JONATHAN.Q-secret-2024"),
        ("repeater", "z" * 20),
    ],
    ids=["too_short", "contains_email_local_part", "one_repeated_character"],
)
async def test_weak_passwords_are_refused(
    client: AsyncClient, db: AsyncSession, settings: Settings, local_part: str, password: str
) -> None:
    admin = await create_user(db, is_admin=True)
    email = f"{local_part}@example-{uuid.uuid4().hex[:6]}.org"

    response = await client.post(
        "/api/users",
        json={"email": email, "password": password},
        headers=await auth_headers(db, settings, admin),
    )

    body = _envelope(response, 422, "weak_password")
    assert isinstance(body["details"], list) and body["details"]
    assert all(d["loc"] == ["body", "password"] for d in body["details"])
    assert password not in response.text
    # Nothing was created: the same email with a good password is still free.
    retry = await client.post(
        "/api/users",
        json={"email": email, "password": "a-Much-better-passphrase-7"},
        headers=await auth_headers(db, settings, admin),
    )
    assert retry.status_code == 201, retry.text


async def test_a_good_password_creates_a_user_who_can_log_in(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    admin = await create_user(db, is_admin=True)
    email = f"new-{uuid.uuid4().hex[:8]}@example.org"
    password = "Violet-staple-orbit-93"

    created = await client.post(
        "/api/users",
        json={"email": email, "password": password, "display_name": "New Person"},
        headers=await auth_headers(db, settings, admin),
    )

    assert created.status_code == 201, created.text
    assert created.json()["email"] == email
    assert "password" not in created.text.lower()
    login = await _login(client, email, password)
    assert login.status_code == 200, login.text
    _envelope(await _login(client, email, password + "x"), 401, "invalid_credentials")


def _legacy_bcrypt_hash() -> str:
    try:
        return str(CryptContext(schemes=["bcrypt"]).hash(DEFAULT_PASSWORD, rounds=4))
    except MissingBackendError:
        return _BCRYPT_OF_DEFAULT_PASSWORD


@pytest.fixture
async def raw_client(client: AsyncClient, app_instance: object) -> AsyncIterator[AsyncClient]:
    """Same app and db override as `client`, but an unhandled error comes back as its 500."""
    assert isinstance(app_instance, FastAPI)
    transport = ASGITransport(
        app=app_instance, client=("10.1.2.3", 40000), raise_app_exceptions=False
    )
    async with AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def test_bcrypt_hash_still_logs_in_and_is_upgraded_to_argon2(
    raw_client: AsyncClient, db: AsyncSession
) -> None:
    user = await create_user(db)
    user.password_hash = _legacy_bcrypt_hash()
    await db.flush()

    response = await _login(raw_client, user.email)

    assert response.status_code == 200, response.text
    await db.refresh(user)
    assert user.password_hash.startswith("$argon2")
    again = await _login(raw_client, user.email)
    assert again.status_code == 200, again.text


async def test_a_replayed_refresh_token_ends_the_session(
    client: AsyncClient, db: AsyncSession
) -> None:
    user = await create_user(db)
    first = await _tokens(client, user.email)
    stolen = first["refresh_token"]
    # The owner refreshes; later someone presents the old (stolen) token.
    owner = await client.post("/api/auth/refresh", json={"refresh_token": stolen})
    assert owner.status_code == 200
    replay = await client.post("/api/auth/refresh", json={"refresh_token": stolen})
    assert replay.status_code == 401
    assert replay.json()["correlation_id"] == replay.headers["x-request-id"]
    # Neither copy survives: the owner's new tokens stop working too.
    new_access = owner.json()["access_token"]
    assert (await client.get("/api/auth/me", headers=_bearer(new_access))).status_code == 401
    again = await client.post(
        "/api/auth/refresh", json={"refresh_token": owner.json()["refresh_token"]}
    )
    assert again.status_code == 401
