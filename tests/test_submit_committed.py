"""The ingest path as production runs it: the app's own sessions on a real database, no test
transaction around it (autocommit, one statement per submission)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import event

from server.cli import migrate
from server.main import create_app
from tests.bench.ingest import seed
from tests.conftest import create_database, drop_database, make_settings

SECRET = "committed-" + "k" * 40


@pytest.fixture
async def committed_db() -> AsyncIterator[str]:
    name = f"metricis_commit_{uuid.uuid4().hex[:8]}"
    url = await create_database(name)
    await asyncio.to_thread(migrate, make_settings(url))
    yield url
    await drop_database(name)


@pytest.mark.slow
async def test_submit_commits_once_and_replays(committed_db: str) -> None:
    token, body_template = await seed(committed_db, SECRET)
    app = create_app(make_settings(committed_db, JWT_SECRET_KEY=SECRET))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = body_template.replace(b"__KEY__", b"committed-1")
    try:
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as http:
            first = await http.post("/api/submit", content=body, headers=headers)
            again = await http.post("/api/submit", content=body, headers=headers)
            changed = orjson.loads(body)
            changed["client_submitted_at"] = "2020-01-01T00:00:00Z"
            conflict = await http.post(
                "/api/submit", content=orjson.dumps(changed), headers=headers
            )
    finally:
        await app.state.engine.dispose()
    assert first.status_code == 201, first.text
    assert again.status_code == 200 and again.json() == first.json()
    assert conflict.status_code == 409

    # Read back from another connection: committed, once, with its tasks and outbox rows.
    conn = await asyncpg.connect(committed_db.replace("+asyncpg", ""))
    try:
        submission_id = uuid.UUID(first.json()["submission_id"])
        assert await conn.fetchval("SELECT count(*) FROM submissions") == 1
        raw = await conn.fetchval(
            "SELECT raw_payload FROM submissions WHERE id = $1", submission_id
        )
        assert bytes(raw) == body
        tasks = await conn.fetch(
            "SELECT position, n_trials, json_array_length(trials) AS n FROM submission_tasks"
            " WHERE submission_id = $1 ORDER BY position",
            submission_id,
        )
        assert [(t["position"], t["n_trials"], t["n"]) for t in tasks] == [
            (0, 100, 100),
            (1, 100, 100),
            (2, 100, 100),
        ]
        # A trial is readable on its own, as exports will read it.
        trial = await conn.fetchval(
            "SELECT t -> 'rt_ms' FROM submission_tasks, json_array_elements(trials) t"
            " WHERE submission_id = $1 AND position = 1 AND (t ->> 'trial_index')::int = 3",
            submission_id,
        )
        assert orjson.loads(trial) == orjson.loads(body)["tasks"][1]["trials"][3]["rt_ms"]
        topics = await conn.fetch(
            "SELECT topic FROM outbox_events WHERE subject_id = $1 AND published_at IS NULL"
            " ORDER BY topic",
            submission_id,
        )
        assert [t["topic"] for t in topics] == [
            "archive.submission",
            "redcap.sync_submission",
            "scoring.submission",
        ]
    finally:
        await conn.close()


@pytest.mark.slow
async def test_concurrent_submits_open_no_connection_beyond_the_pool(committed_db: str) -> None:
    """More requests in flight than the pool holds take turns on its connections, one
    statement at a time, rather than open overflow connections the pool closes on return."""
    token, body_template = await seed(committed_db, SECRET)
    app = create_app(make_settings(committed_db, JWT_SECRET_KEY=SECRET, DATABASE_POOL_SIZE=2))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def body(key: str) -> bytes:
        return body_template.replace(b"__KEY__", key.encode())

    opened: list[object] = []
    event.listen(app.state.engine.sync_engine, "connect", lambda *_: opened.append(1))
    try:
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as http:
            # The first submission of a session looks its battery up through the session, once
            # per process; the burst after it is the steady state.
            first = await http.post("/api/submit", content=body("first"), headers=headers)
            burst = await asyncio.gather(
                *(
                    http.post("/api/submit", content=body(f"burst-{i}"), headers=headers)
                    for i in range(12)
                )
            )
    finally:
        await app.state.engine.dispose()
    assert [r.status_code for r in [first, *burst]] == [201] * 13
    assert len(opened) <= 2
