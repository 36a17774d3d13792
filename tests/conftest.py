"""Real PostgreSQL (one migrated database per run and xdist worker) and real Redis.

Each test runs inside an outer transaction that is rolled back; the app's unit of work
commits to a savepoint inside it, so tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path

import asyncpg
import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from redis import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from server.cli import migrate
from server.core.config import Settings
from server.core.db import get_autocommit_session, get_db_session
from server.main import create_app
from tests import services

TEST_SECRET = "test-secret-" + "x" * 40
# Where the suite starts its own PostgreSQL and Redis when none answers at TEST_DATABASE_URL /
# TEST_REDIS_URL (a machine with only Python): the same pip packages `make run` uses.
EMBEDDED_FOLDER = Path(__file__).resolve().parent.parent / "var" / "test-servers"
_embedded: ExitStack | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _embedded
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        # The controller chooses the servers; its environment comes down to the workers.
        _embedded = _start_missing_servers()
    # What this process's own settings read (Celery's configuration, the processes a test
    # starts): the test servers, never a developer's DATABASE_URL or REDIS_URL.
    os.environ["DATABASE_URL"] = services.TEST_DATABASE_URL
    os.environ["REDIS_URL"] = services.redis_db_url()


def _start_missing_servers() -> ExitStack | None:
    need_pg = not services.database_answers(services.TEST_DATABASE_URL)
    need_redis = not services.redis_answers(services.TEST_REDIS_URL)
    if not (need_pg or need_redis):
        return None
    from devservers.stack import embedded

    started = ExitStack()
    urls = started.enter_context(
        embedded(EMBEDDED_FOLDER, postgres=need_pg, redis=need_redis, throwaway=True)
    )
    services.use_servers(
        urls.admin_database_url or services.TEST_DATABASE_URL,
        (urls.redis_url or services.TEST_REDIS_URL).removesuffix("/0"),
    )
    print(f"embedded servers for this run: {services.TEST_DATABASE_URL} {services.TEST_REDIS_URL}")
    return started


def pytest_unconfigure(config: pytest.Config) -> None:
    if _embedded is not None:
        _embedded.close()


def make_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "ENVIRONMENT": "test",
        "DATABASE_URL": database_url,
        "REDIS_URL": services.redis_db_url(),
        "JWT_SECRET_KEY": TEST_SECRET,
        "LOG_LEVEL": "INFO",
        "RATE_LIMIT_DEFAULT": "1000/minute",
        "PASSWORD_MIN_LENGTH": 12,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def _admin_connection() -> asyncpg.Connection:
    return await asyncpg.connect(services.TEST_DATABASE_URL.replace("+asyncpg", ""))


async def create_database(name: str) -> str:
    conn = await _admin_connection()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return services.database_url(name)


async def drop_database(name: str) -> None:
    conn = await _admin_connection()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    name = f"metricis_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = await create_database(name)
    # Alembic's env runs its own event loop, so it gets a thread of its own.
    await asyncio.to_thread(migrate, make_settings(url))
    yield url
    await drop_database(name)


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(settings.DATABASE_URL)
    yield engine
    await engine.dispose()


@pytest.fixture
async def db(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with engine.connect() as connection:
        transaction = await connection.begin()
        session = AsyncSession(
            bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        try:
            yield session
        finally:
            await session.close()
            await transaction.rollback()


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[Redis]:
    client = Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
async def app_instance(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    yield app
    await app.state.engine.dispose()
    if app.state.redis is not None:
        await app.state.redis.aclose()


def use_test_session(app: FastAPI, db: AsyncSession) -> None:
    """Point the app's unit of work at the test's connection.

    Same contract as the real one: its commit releases a savepoint, its rollback undoes only
    the request, never the test's own setup.
    """

    async def test_session() -> AsyncIterator[AsyncSession]:
        async with AsyncSession(
            bind=db.bind, expire_on_commit=False, join_transaction_mode="create_savepoint"
        ) as session:
            try:
                yield session
            except Exception:
                await session.rollback()
                raise
            else:
                await session.commit()

    app.dependency_overrides[get_db_session] = test_session
    # The ingest path's autocommit session too: in a test, everything stays in its transaction.
    app.dependency_overrides[get_autocommit_session] = test_session


@pytest.fixture
async def client(
    app_instance: FastAPI, db: AsyncSession, redis_client: Redis
) -> AsyncIterator[AsyncClient]:
    use_test_session(app_instance, db)
    transport = ASGITransport(app=app_instance, client=("10.1.2.3", 40000))
    async with AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
    app_instance.dependency_overrides.clear()
