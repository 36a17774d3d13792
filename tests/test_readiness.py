"""Readiness answers 503 with the failing component when Redis is down, 200 when it is back."""

from __future__ import annotations

import pytest
from httpx import ASGITransport, AsyncClient

from server.core.config import Settings
from server.main import create_app
from tests import services
from tests.conftest import make_settings


@pytest.mark.slow
async def test_readiness_when_redis_is_stopped(settings: Settings) -> None:
    with services.own_redis() as (redis_proc, port):
        app = create_app(
            make_settings(settings.DATABASE_URL, REDIS_URL=f"redis://127.0.0.1:{port}/0")
        )
        try:
            async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as http:
                ready = await http.get("/api/health/ready")
                assert ready.status_code == 200, ready.text

                redis_proc.kill()
                redis_proc.wait()
                down = await http.get("/api/health/ready")
                assert down.status_code == 503
                body = down.json()
                assert body["error_code"] == "not_ready"
                assert body["details"]["failing"] == ["broker"]
                assert body["details"]["components"]["database"] == "ok"
                assert body["correlation_id"] == down.headers["x-request-id"]
                # Liveness is about the process, not its dependencies.
                assert (await http.get("/api/health")).status_code == 200

                with services.redis_on(port):
                    back = await http.get("/api/health/ready")
                    assert back.status_code == 200
        finally:
            await app.state.engine.dispose()
            await app.state.redis.aclose()


async def test_readiness_when_database_is_unreachable(settings: Settings) -> None:
    port = services.free_port()  # nothing listens here
    app = create_app(make_settings(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/nowhere"))
    try:
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as http:
            response = await http.get("/api/health/ready")
        assert response.status_code == 503
        assert response.json()["details"]["failing"] == ["database"]
    finally:
        await app.state.engine.dispose()
        await app.state.redis.aclose()
