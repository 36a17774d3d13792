"""Two coordinators reprocessing the same quarantined submission at once, on a committed
database (no test transaction around the app): it is released once, and owes REDCap one
sync, not two."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from server.cli import migrate
from server.main import create_app
from server.modules.models import Module
from server.studies.models import Study, StudyRole
from tests import factories
from tests import ingest_factories as ingest
from tests.bench.ingest import BENCH_TRIAL_SCHEMA, seed
from tests.conftest import create_database, drop_database, make_settings

SECRET = "quarantine-" + "k" * 40


@pytest.fixture
async def committed_db() -> AsyncIterator[str]:
    name = f"metricis_qtn_{uuid.uuid4().hex[:8]}"
    url = await create_database(name)
    await asyncio.to_thread(migrate, make_settings(url))
    yield url
    await drop_database(name)


async def corrected_version_and_coordinator(database_url: str, module_key: str) -> str:
    """Version 2 of the module, allowing the field the device added; a coordinator's headers."""
    engine = create_async_engine(database_url)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as db, db.begin():
            schema: dict[str, Any] = copy.deepcopy(BENCH_TRIAL_SCHEMA)
            schema["properties"]["focus_lost"] = {"type": "boolean"}
            corrected = await ingest.create_module(db, module_key, version=2)
            corrected.trial_schema = schema
            study = await db.scalar(select(Study))
            assert study is not None
            coordinator = await factories.create_user(db)
            await factories.add_member(db, study, coordinator, StudyRole.coordinator)
            settings = make_settings(database_url, JWT_SECRET_KEY=SECRET)
            headers = await factories.auth_headers(db, settings, coordinator)
            assert await db.scalar(select(Module.id).where(Module.key == module_key))
    finally:
        await engine.dispose()
    return headers["Authorization"]


@pytest.mark.slow
async def test_concurrent_reprocesses_release_it_once(committed_db: str) -> None:
    token, template = await seed(committed_db, SECRET)
    body = orjson.loads(template.replace(b"__KEY__", b"held-1"))
    body["tasks"][0]["trials"][3]["focus_lost"] = True
    module_key = body["tasks"][0]["module_key"]
    app = create_app(make_settings(committed_db, JWT_SECRET_KEY=SECRET))
    try:
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as http:
            held = await http.post(
                "/api/submit", json=body, headers={"Authorization": f"Bearer {token}"}
            )
            assert held.status_code == 202, held.text
            staff = {
                "Authorization": await corrected_version_and_coordinator(committed_db, module_key)
            }
            url = f"/api/submissions/{held.json()['submission_id']}/reprocess"
            answers = await asyncio.gather(
                *(
                    http.post(url, json={"module_versions": "latest"}, headers=staff)
                    for _ in range(2)
                )
            )
    finally:
        await app.state.engine.dispose()
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    [released] = [a.json() for a in answers if a.status_code == 200]
    assert released["status"] == "accepted"
    [refused] = [a.json() for a in answers if a.status_code == 409]
    assert refused["error_code"] == "submission_not_quarantined"

    conn = await asyncpg.connect(committed_db.replace("+asyncpg", ""))
    try:
        submission_id = uuid.UUID(held.json()["submission_id"])
        topics = await conn.fetch(
            "SELECT topic FROM outbox_events WHERE subject_id = $1 ORDER BY topic", submission_id
        )
        assert [t["topic"] for t in topics] == [
            "archive.submission",
            "redcap.sync_submission",
            "scoring.submission",
        ]
        versions = await conn.fetch(
            "SELECT module_version FROM submission_tasks WHERE submission_id = $1"
            " ORDER BY position",
            submission_id,
        )
        assert [v["module_version"] for v in versions] == [2, 1, 1]
    finally:
        await conn.close()
