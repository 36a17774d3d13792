"""Rate limits on a redis-server of the test's own that hangs, dies, or serves two processes.

A Redis that hangs or dies must stall nothing: limited requests go through (fail open, with a
warning) and the rest of the process never waits. The hang is a SIGSTOP: the kernel still
accepts connections and buffers what the app sends, so the app's commands wait for an answer
that does not come, as with a frozen or partitioned server. A dead one refuses at once.
The hang and the shared limit run in real uvicorn processes (`python -m server serve`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from structlog.testing import capture_logs

from server.core.config import Settings
from server.main import create_app
from tests.conftest import TEST_SECRET, make_settings, use_test_session
from tests.e2e.stack import Process
from tests.factories import DEFAULT_PASSWORD, auth_headers, create_user
from tests.services import eventually, free_port, own_redis

pytestmark = pytest.mark.slow

# Rate-limited (the default limit) and answers 401 without a token: the limit runs first.
LIMITED = "/api/studies"
# Only to tell a hang from an answer; nothing here is meant to take more than a moment.
HANG_S = 20.0


def _unread_by(port: int) -> int:
    """Bytes clients have sent to the server listening on `port` that it has not read yet:
    the receive queues of its established TCP sockets (Linux's /proc/net/tcp)."""
    unread = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:  # 01: ESTABLISHED
            unread += int(queues.split(":")[1], 16)
    return unread


@contextmanager
def _serve(
    tmp_path: Path, settings: Settings, redis_port: int, **env: object
) -> Iterator[tuple[str, Process]]:
    """`python -m server serve` on a free port, on the test database and the given Redis;
    yields its base URL and process, stops it at the end (output in the report on failure)."""
    port = free_port()
    values: dict[str, object] = {
        "ENVIRONMENT": "test",
        "DATABASE_URL": settings.DATABASE_URL,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "JWT_SECRET_KEY": TEST_SECRET,
        "LOG_LEVEL": "INFO",
        "LOG_JSON": "false",
        **env,
    }
    argv = [sys.executable, "-m", "server", "serve", "--port", str(port)]
    log = tmp_path / f"api-{port}.log"
    api = Process(f"api-{port}", argv, os.environ | {k: str(v) for k, v in values.items()}, log)
    api.start()
    try:
        yield f"http://127.0.0.1:{port}", api
    finally:
        api.stop()
        print(f"--- {api.name}\n{api.tail()}")


@asynccontextmanager
async def _client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=HANG_S) as http:

        async def up() -> bool:
            with suppress(httpx.TransportError):
                return (await http.get("/api/health")).status_code == 200
            return False

        await eventually(up, timeout=60, what=lambda: f"{base_url} to answer")
        yield http


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")
async def test_a_hung_redis_stalls_neither_health_nor_rate_limited_routes(
    tmp_path: Path, settings: Settings
) -> None:
    with own_redis() as (redis, redis_port):
        # The limiter's bound, well above what health needs to answer (the hang detector).
        limits = {"RATE_LIMIT_DEFAULT": "3/minute", "RATE_LIMIT_TIMEOUT_SECONDS": 5}
        with _serve(tmp_path, settings, redis_port, **limits) as (base_url, api):
            async with _client(base_url) as http:
                assert (await http.get(LIMITED)).status_code == 401  # one of the 3, counted

                os.kill(redis.pid, signal.SIGSTOP)
                pending = asyncio.create_task(http.get(LIMITED))
                try:
                    await eventually(
                        lambda: _unread_by(redis_port) > 0,
                        what=lambda: "the limiter's command to reach the stopped Redis",
                    )
                    health = await http.get("/api/health")
                    # A limiter that blocks the event loop lets health in only after it gave
                    # up on Redis, and giving up closes its connection (no longer ESTABLISHED).
                    still_waiting = _unread_by(redis_port) > 0 and not pending.done()
                    assert health.status_code == 200
                    assert still_waiting, "health answered only after the limiter gave up"

                    # Past its bound the limiter lets the request through (fail open) and says so.
                    limited = await pending
                    assert limited.status_code == 401, limited.text
                    assert "rate_limit_storage_unavailable" in api.output()
                    assert "TimeoutError" in api.output()
                finally:
                    os.kill(redis.pid, signal.SIGCONT)
                    pending.cancel()  # if an assertion left it waiting

                # Redis answers again, and so does the limit: whatever was counted during the
                # hang, a 429 comes within the limit's 3 requests.
                statuses = [(await http.get(LIMITED)).status_code for _ in range(4)]
                assert 429 in statuses, statuses


async def test_two_processes_on_one_redis_enforce_one_limit(
    tmp_path: Path, settings: Settings
) -> None:
    with own_redis() as (_redis, redis_port):
        limits = {"RATE_LIMIT_DEFAULT": "4/minute"}
        with (
            _serve(tmp_path, settings, redis_port, **limits) as (first_url, _first),
            _serve(tmp_path, settings, redis_port, **limits) as (second_url, _second),
        ):
            async with _client(first_url) as first, _client(second_url) as second:
                # Two each: neither process alone has reached 4.
                allowed = [(await http.get(LIMITED)).status_code for http in (first, second) * 2]
                blocked = [await http.get(LIMITED) for http in (first, second)]

    assert allowed == [401] * 4
    for response in blocked:
        assert response.status_code == 429, response.text
        assert response.json()["details"]["scope"] == "default"
        assert 1 <= int(response.headers["retry-after"]) <= 60


async def test_a_dead_redis_lets_limited_requests_through(
    db: AsyncSession, settings: Settings
) -> None:
    user = await create_user(db)
    headers = await auth_headers(db, settings, user)
    with own_redis() as (redis, redis_port):
        app = create_app(
            make_settings(
                settings.DATABASE_URL,
                REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
                RATE_LIMIT_DEFAULT="1/minute",
            )
        )
        use_test_session(app, db)
        redis.kill()
        redis.wait()
        transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 1))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                with capture_logs() as logs:
                    studies = [(await http.get(LIMITED, headers=headers)).status_code for _ in "ab"]
                    login = {"username": user.email, "password": "wrong-password-123"}
                    wrong = await http.post("/api/auth/login", data=login)
                    right = await http.post(
                        "/api/auth/login", data=login | {"password": DEFAULT_PASSWORD}
                    )
        finally:
            await app.state.engine.dispose()
            await app.state.redis.aclose()

    # Over the 1/minute limit, but nothing can count: through, as before the limiter was async.
    assert studies == [200, 200]
    assert (wrong.status_code, right.status_code) == (401, 200)
    warnings = [e for e in logs if e["event"] == "rate_limit_storage_unavailable"]
    assert {e["error"] for e in warnings} == {"ConnectionError"}
    assert {e["scope"] for e in warnings} == {"default", "login-ip", "login-account"}
