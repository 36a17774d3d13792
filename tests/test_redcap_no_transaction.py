"""No REDCap call runs inside an open database transaction (issue 11.3).

On a database of its own, as production runs it (the app's own sessions and pool, no test
transaction around them: in the usual harness every request is a savepoint of the test's
transaction, which is open by design). At the moment the REDCap stand-in receives each call,
it asks PostgreSQL which client sessions of the app's database have a transaction open: the
connection test, the mapping save and the participant import's task (run as a worker runs it,
workers.protocol on the app's engine) must leave none.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import select

from server.cli import migrate
from server.main import create_app
from server.outbox import service as outbox
from server.outbox.models import OutboxEvent
from tests.conftest import create_database, drop_database, make_settings
from tests.redcap_standin import RedcapStandin, classic_project
from tests.test_redcap_support import create_connection, make_world, running, session_mapping
from workers.protocol import process
from workers.tasks.redcap import _import, import_participants

# Client sessions of this database, other than the one asking, inside a transaction.
OPEN_TRANSACTIONS = """
    SELECT pid, state, left(query, 120) AS query FROM pg_stat_activity
    WHERE datname = current_database() AND backend_type = 'client backend'
      AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
"""


@pytest.fixture
async def own_database() -> AsyncIterator[str]:
    name = f"metricis_notx_{uuid.uuid4().hex[:8]}"
    url = await create_database(name)
    await asyncio.to_thread(migrate, make_settings(url))
    yield url
    await drop_database(name)


@pytest.fixture
def classic() -> Iterator[RedcapStandin]:
    project = classic_project()
    project.records = [
        {"record_id": "1001", "enrol_date": "2024-01-10", "enrollment_complete": "2",
         "redcap_data_access_group": "site_a"},
    ]  # fmt: skip
    yield from running(project)


class Watcher:
    """The stand-in's on_call hook: the open transactions at each call, by content."""

    def __init__(self, database_url: str) -> None:
        self.dsn = database_url.replace("+asyncpg", "")
        self.seen: list[tuple[str | None, list[dict[str, Any]]]] = []

    async def _look(self) -> list[dict[str, Any]]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return [dict(r) for r in await conn.fetch(OPEN_TRANSACTIONS)]
        finally:
            await conn.close()

    def __call__(self, content: str | None) -> None:
        # The stand-in's own thread: a loop of its own for the look.
        self.seen.append((content, asyncio.run(self._look())))

    def take(self) -> list[tuple[str | None, list[dict[str, Any]]]]:
        seen, self.seen = self.seen, []
        return seen


@pytest.mark.slow
async def test_redcap_is_never_asked_inside_a_transaction(
    own_database: str, classic: RedcapStandin
) -> None:
    settings = make_settings(own_database)
    app = create_app(settings)
    watcher = Watcher(own_database)
    try:
        async with app.state.sessionmaker() as db:
            world = await make_world(db, settings)
            await db.commit()
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as http:
            connection = await create_connection(http, world, classic)
            url = f"/api/redcap/connections/{connection['id']}"
            classic.on_call = watcher

            tested = await http.post(f"{url}/test", headers=world.headers)
            assert tested.status_code == 200, tested.text
            test_calls = watcher.take()

            mapped = await http.put(
                f"{url}/mapping", json=session_mapping(world), headers=world.headers
            )
            assert mapped.status_code == 200, mapped.text
            mapping_calls = watcher.take()

            queued = await http.post(
                f"{url}/participant-import",
                json={"form": "enrollment", "site_source": "dag", "dag_to_site": {"site_a": "A"}},
                headers=world.headers,
            )
            assert queued.status_code == 202, queued.text
            assert watcher.take() == []  # the request itself asks REDCap nothing
            async with app.state.sessionmaker() as db:
                [event_id] = (
                    await db.scalars(
                        select(OutboxEvent.id).where(
                            OutboxEvent.topic == outbox.REDCAP_IMPORT_PARTICIPANTS
                        )
                    )
                ).all()
            outcome = await process(
                app.state.sessionmaker,
                settings,
                event_id=event_id,
                task_name=import_participants.name,
                handler=_import,
            )
            import_calls = watcher.take()
            done = await http.get(
                f"{url}/participant-imports/{queued.json()['id']}", headers=world.headers
            )
    finally:
        classic.on_call = None
        await app.state.engine.dispose()

    assert outcome == "succeeded"
    assert (done.json()["status"], done.json()["report"]["created"]) == ("succeeded", 1)
    assert {c for c, _ in test_calls} >= {"project", "version"}
    assert {c for c, _ in mapping_calls} >= {"metadata"}
    assert [c for c, _ in import_calls] == ["metadata", "record", "record"]
    for name, calls in [("test", test_calls), ("mapping", mapping_calls), ("import", import_calls)]:
        held = [(content, rows) for content, rows in calls if rows]
        assert not held, f"{name}: a transaction was open while REDCap was asked: {held}"
