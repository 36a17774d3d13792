"""Scoring on a committed database, as workers run it: several submissions of one session
scored at once leave one set of quality checks (the session's lock), and each task one score."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from httpx import ASGITransport, AsyncClient

from server.cli import migrate
from server.core.db import create_engine, create_sessionmaker
from server.main import create_app
from server.submissions import scoring_run
from tests.bench.ingest import seed
from tests.conftest import create_database, drop_database, make_settings

SECRET = "scoring-committed-" + "s" * 40

pytestmark = pytest.mark.slow


@pytest.fixture
async def committed_db() -> AsyncIterator[str]:
    name = f"metricis_scoring_{uuid.uuid4().hex[:8]}"
    url = await create_database(name)
    await asyncio.to_thread(migrate, make_settings(url))
    yield url
    await drop_database(name)


async def test_submissions_of_one_session_scored_at_once_leave_one_set_of_checks(
    committed_db: str,
) -> None:
    token, template = await seed(committed_db, SECRET)
    settings = make_settings(committed_db, JWT_SECRET_KEY=SECRET)
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as http:
            ids = []
            for n in range(4):
                body = template.replace(b"__KEY__", f"parallel-{n}".encode())
                response = await http.post("/api/submit", content=body, headers=headers)
                assert response.status_code == 201, response.text
                ids.append(uuid.UUID(response.json()["submission_id"]))
    finally:
        await app.state.engine.dispose()

    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)

    async def score(submission_id: uuid.UUID) -> None:
        async with sessionmaker() as db, db.begin():
            await scoring_run.score_submission(db, submission_id)

    try:
        # Twice each, all at once: eight runs racing over one session.
        await asyncio.gather(*(score(i) for i in ids + ids))
    finally:
        await engine.dispose()

    conn = await asyncpg.connect(committed_db.replace("+asyncpg", ""))
    try:
        assert await conn.fetchval("SELECT count(*) FROM task_scores") == 4 * 3
        repeated = await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM quality_checks"
            " GROUP BY rule, scope, submission_id, position HAVING count(*) > 1) r"
        )
        assert repeated == 0
        # Every submission's tasks checked, plus the session's own rules, once.
        per_task = await conn.fetchval(
            "SELECT count(DISTINCT (submission_id, position)) FROM quality_checks"
            " WHERE scope = 'task'"
        )
        assert per_task == 4 * 3
    finally:
        await conn.close()
