"""Redis down: submissions are still acknowledged, and their outbox rows wait for the relay."""

from __future__ import annotations

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.main import create_app
from server.outbox.models import OutboxEvent
from tests import factories, services
from tests import ingest_factories as ingest
from tests.conftest import make_settings, use_test_session


@pytest.mark.slow
async def test_submissions_acknowledged_while_redis_is_stopped(
    db: AsyncSession, settings: Settings
) -> None:
    study = await factories.create_study(db)
    participant = await factories.create_participant(db, await factories.create_site(db, study))
    modules = await ingest.standard_modules(db)
    session = await ingest.start_session(
        db, participant, await ingest.create_battery(db, study, modules)
    )
    headers = await ingest.participant_headers(db, settings, participant)

    with services.own_redis() as (redis_proc, port):
        app = create_app(
            make_settings(settings.DATABASE_URL, REDIS_URL=f"redis://127.0.0.1:{port}/0")
        )
        use_test_session(app, db)
        try:
            async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as http:
                redis_proc.kill()
                redis_proc.wait()
                assert (await http.get("/api/health/ready")).json()["details"]["failing"] == [
                    "broker"
                ]
                receipts = []
                for _ in range(3):
                    body = ingest.payload(session.id, modules, n_trials=50)
                    response = await http.post("/api/submit", json=body, headers=headers)
                    assert response.status_code == 201, response.text
                    receipts.append(response.json()["submission_id"])
        finally:
            await app.state.engine.dispose()
            await app.state.redis.aclose()

    rows = (
        (await db.execute(select(OutboxEvent).where(OutboxEvent.subject_id.in_(receipts))))
        .scalars()
        .all()
    )
    assert len(rows) == 9  # archive, REDCap sync and scoring, for each
    assert {str(r.subject_id) for r in rows} == set(receipts)
    # Nothing was published (there was no broker); every row waits for the relay.
    assert all(r.published_at is None and r.finished_at is None for r in rows)
