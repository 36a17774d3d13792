"""Rate limits, counted in a real Redis.

The counters live in a redis-server of this module's own (flushed per test), not the shared
test database number: other pytest runs in the same checkout use that number too and flush it
at the start of each of their tests, which would reset a counter in the middle of one of ours.
Every app here is built by `create_app`, as a process would build it, on that Redis.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response
from redis import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.core.db import get_db_session
from server.main import create_app
from tests.conftest import make_settings
from tests.factories import DEFAULT_PASSWORD, auth_headers, create_user
from tests.services import own_redis

LOGIN = "/api/auth/login"
LOGIN_LIMIT = 10
PEER = "10.1.2.3"

AppFactory = Callable[..., FastAPI]


def _rate_limited(response: Response, scope: str) -> dict[str, Any]:
    assert response.status_code == 429, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error_code", "message", "correlation_id", "details"}
    assert body["error_code"] == "rate_limited"
    assert body["message"]
    assert body["correlation_id"] and body["correlation_id"] == response.headers["x-request-id"]
    assert body["details"]["scope"] == scope
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit(), retry_after
    assert 1 <= int(retry_after) <= 60
    return body


def _unknown_email() -> str:
    return f"nobody-{uuid.uuid4().hex[:10]}@example.org"


async def _attempt(
    client: AsyncClient,
    email: str,
    password: str = "wrong-password-123",
    headers: dict[str, str] | None = None,
) -> Response:
    return await client.post(LOGIN, data={"username": email, "password": password}, headers=headers)


@asynccontextmanager
async def _peer(app: FastAPI, ip: str) -> AsyncIterator[AsyncClient]:
    transport = ASGITransport(app=app, client=(ip, 1))
    async with AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture(scope="module")
def private_redis_url() -> Iterator[str]:
    with own_redis() as (_proc, port):
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def limits_redis(private_redis_url: str) -> Iterator[str]:
    client = Redis.from_url(private_redis_url)
    client.flushdb()
    yield private_redis_url
    client.close()


@pytest.fixture
async def make_app(
    client: AsyncClient, settings: Settings, app_instance: object, limits_redis: str
) -> AsyncIterator[AppFactory]:
    """Build app objects on the test db (the `client` fixture's override) and the private Redis."""
    assert isinstance(app_instance, FastAPI)
    override = app_instance.dependency_overrides[get_db_session]
    built: list[FastAPI] = []

    def build(**overrides: object) -> FastAPI:
        app = create_app(
            make_settings(settings.DATABASE_URL, **{"REDIS_URL": limits_redis, **overrides})
        )
        app.dependency_overrides[get_db_session] = override
        built.append(app)
        return app

    yield build
    for app in built:
        await app.state.engine.dispose()
        if app.state.redis is not None:
            await app.state.redis.aclose()


# --- login, per IP -----------------------------------------------------------------------


async def test_eleventh_login_from_one_ip_is_429_even_with_the_right_password(
    make_app: AppFactory, db: AsyncSession
) -> None:
    user = await create_user(db)
    app = make_app()
    async with _peer(app, PEER) as http:
        for _ in range(LOGIN_LIMIT):
            # A different account each time, so only the per-IP counter can trip.
            assert (await _attempt(http, _unknown_email())).status_code == 401
        blocked = await _attempt(http, user.email, DEFAULT_PASSWORD)
    # Only that address is held back: the same user from elsewhere still gets in.
    async with _peer(app, "10.9.9.1") as elsewhere:
        other_ip = await _attempt(elsewhere, user.email, DEFAULT_PASSWORD)

    body = _rate_limited(blocked, "login-ip")
    assert "access_token" not in blocked.text
    assert body["details"]["limit"].startswith("10 per 1 minute")
    assert other_ip.status_code == 200, other_ip.text


async def test_a_client_supplied_x_request_id_survives_on_a_429(make_app: AppFactory) -> None:
    async with _peer(make_app(), PEER) as http:
        for _ in range(LOGIN_LIMIT):
            await _attempt(http, _unknown_email())
        blocked = await _attempt(http, _unknown_email(), headers={"X-Request-ID": "rl-429-id"})

    body = _rate_limited(blocked, "login-ip")
    assert body["correlation_id"] == "rl-429-id"


# --- login, per account ------------------------------------------------------------------


async def test_one_account_is_limited_across_many_ips(
    make_app: AppFactory, db: AsyncSession
) -> None:
    user = await create_user(db, email=f"target-{uuid.uuid4().hex[:8]}@example.org")
    bystander = await create_user(db)
    app = make_app()
    for n in range(1, LOGIN_LIMIT + 1):
        # Spelling the address differently does not make it another account.
        email = user.email.upper() if n % 2 else user.email
        async with _peer(app, f"10.9.9.{n}") as attacker:
            assert (await _attempt(attacker, email)).status_code == 401

    async with _peer(app, "10.9.9.200") as fresh_ip:
        blocked = await _attempt(fresh_ip, user.email, DEFAULT_PASSWORD)
        other_account = await _attempt(fresh_ip, bystander.email, DEFAULT_PASSWORD)

    body = _rate_limited(blocked, "login-account")
    # The account key is not the email address.
    assert user.email not in blocked.text
    assert body["details"]["limit"].startswith("10 per 1 minute")
    assert other_account.status_code == 200, other_account.text


# --- X-Forwarded-For ---------------------------------------------------------------------


async def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(make_app: AppFactory) -> None:
    async with _peer(make_app(), PEER) as http:
        for n in range(LOGIN_LIMIT):
            spoofed = {"X-Forwarded-For": f"203.0.113.{n + 1}"}
            assert (await _attempt(http, _unknown_email(), headers=spoofed)).status_code == 401
        blocked = await _attempt(
            http, _unknown_email(), headers={"X-Forwarded-For": "198.51.100.77"}
        )

    _rate_limited(blocked, "login-ip")


async def test_x_forwarded_for_from_a_trusted_proxy_is_honoured(
    make_app: AppFactory, db: AsyncSession
) -> None:
    user = await create_user(db)
    async with _peer(make_app(TRUSTED_PROXIES=PEER), PEER) as proxy:
        for n in range(LOGIN_LIMIT):
            # The client may prepend whatever it likes; the proxy appends the real address.
            chain = {"X-Forwarded-For": f"192.0.2.{n + 1}, 203.0.113.7"}
            assert (await _attempt(proxy, _unknown_email(), headers=chain)).status_code == 401

        blocked = await _attempt(
            proxy, user.email, DEFAULT_PASSWORD, headers={"X-Forwarded-For": "203.0.113.7"}
        )
        other_client = await _attempt(
            proxy, user.email, DEFAULT_PASSWORD, headers={"X-Forwarded-For": "203.0.113.8"}
        )
        proxy_itself = await _attempt(proxy, user.email, DEFAULT_PASSWORD)

    _rate_limited(blocked, "login-ip")
    assert other_client.status_code == 200, other_client.text
    assert proxy_itself.status_code == 200, proxy_itself.text


# --- the general limit -------------------------------------------------------------------


async def test_default_limit_answers_429_on_study_routes(
    make_app: AppFactory, db: AsyncSession, settings: Settings
) -> None:
    user = await create_user(db)
    headers = await auth_headers(db, settings, user)
    app = make_app(RATE_LIMIT_DEFAULT="3/minute")
    async with _peer(app, PEER) as http, _peer(app, "10.7.7.7") as other_ip:
        statuses = [(await http.get("/api/studies", headers=headers)).status_code for _ in "abc"]
        blocked = await http.get("/api/studies", headers=headers)
        blocked_detail = await http.get(f"/api/studies/{uuid.uuid4()}", headers=headers)
        elsewhere = await other_ip.get("/api/studies", headers=headers)

    assert statuses == [200, 200, 200]
    body = _rate_limited(blocked, "default")
    assert body["details"]["limit"].startswith("3 per 1 minute")
    _rate_limited(blocked_detail, "default")
    assert elsewhere.status_code == 200


async def test_limits_can_be_switched_off(
    make_app: AppFactory, db: AsyncSession, settings: Settings
) -> None:
    user = await create_user(db)
    headers = await auth_headers(db, settings, user)
    app = make_app(RATE_LIMIT_DEFAULT="1/minute", RATE_LIMIT_ENABLED=False)
    async with _peer(app, PEER) as http:
        statuses = [(await http.get("/api/studies", headers=headers)).status_code for _ in "abc"]

    assert statuses == [200, 200, 200]


async def test_default_limit_is_shared_across_app_instances(
    make_app: AppFactory, db: AsyncSession, settings: Settings
) -> None:
    user = await create_user(db)
    headers = await auth_headers(db, settings, user)
    first = make_app(RATE_LIMIT_DEFAULT="3/minute")
    second = make_app(RATE_LIMIT_DEFAULT="3/minute")
    assert first is not second and first.state.rate_limits is not second.state.rate_limits
    async with _peer(first, PEER) as via_first, _peer(second, PEER) as via_second:
        statuses = [
            (await via_first.get("/api/studies", headers=headers)).status_code,
            (await via_second.get("/api/studies", headers=headers)).status_code,
            (await via_first.get("/api/studies", headers=headers)).status_code,
        ]
        blocked = await via_second.get("/api/studies", headers=headers)

    assert statuses == [200, 200, 200]
    _rate_limited(blocked, "default")


async def test_login_limit_is_shared_across_app_instances(
    make_app: AppFactory, db: AsyncSession
) -> None:
    user = await create_user(db)
    async with _peer(make_app(), PEER) as first:
        for _ in range(LOGIN_LIMIT):
            assert (await _attempt(first, _unknown_email())).status_code == 401

    async with _peer(make_app(), PEER) as second:
        blocked = await _attempt(second, user.email, DEFAULT_PASSWORD)

    _rate_limited(blocked, "login-ip")


# --- health ------------------------------------------------------------------------------


async def test_health_endpoints_are_not_limited(
    make_app: AppFactory, db: AsyncSession, settings: Settings
) -> None:
    user = await create_user(db)
    headers = await auth_headers(db, settings, user)
    async with _peer(make_app(RATE_LIMIT_DEFAULT="2/minute"), PEER) as http:
        liveness = [(await http.get("/api/health")).status_code for _ in range(6)]
        readiness = [(await http.get("/api/health/ready")).status_code for _ in range(3)]
        # The limit is live on this app: the API proper runs out after two.
        api = [(await http.get("/api/studies", headers=headers)).status_code for _ in "abc"]

    assert liveness == [200] * 6
    assert readiness == [200] * 3
    assert api == [200, 200, 429]


async def test_successful_logins_do_not_use_up_the_account_limit(
    make_app: AppFactory, db: AsyncSession
) -> None:
    user = await create_user(db, email=f"owner-{uuid.uuid4().hex[:8]}@example.org")
    app = make_app()
    for n in range(1, LOGIN_LIMIT + 3):
        # Many devices of one owner (one IP each), all with the right password.
        async with _peer(app, f"10.8.8.{n}") as device:
            response = await _attempt(device, user.email, DEFAULT_PASSWORD)
            assert response.status_code == 200, (n, response.text)
