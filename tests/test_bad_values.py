"""Values the database cannot store are bad input: 422 in the envelope, never 500."""

from __future__ import annotations

from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.studies.models import StudyRole
from tests import factories
from tests import ingest_factories as ingest


async def test_nul_character_in_login_is_422(client: AsyncClient) -> None:
    response = await client.post(
        "/api/auth/login", data={"username": "a\x00b@example.org", "password": "x" * 12}
    )
    assert response.status_code == 422
    body = response.json()
    assert body["error_code"] == "invalid_value"
    assert body["correlation_id"] == response.headers["x-request-id"]


async def test_nul_and_out_of_range_values_in_json_are_422(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study = await factories.create_study(db)
    site = await factories.create_site(db, study)
    user = await factories.create_user(db)
    await factories.add_member(db, study, user, StudyRole.coordinator)
    headers = await factories.auth_headers(db, settings, user)
    participant = await factories.create_participant(db, site)
    renamed = await client.patch(
        f"/api/studies/{study.id}/sites/{site.id}", json={"name": "Lon\x00don"}, headers=headers
    )
    assert renamed.status_code == 422 and renamed.json()["error_code"] == "invalid_value"

    modules = await ingest.standard_modules(db)
    session = await ingest.start_session(
        db, participant, await ingest.create_battery(db, study, modules)
    )
    p_headers = await ingest.participant_headers(db, settings, participant)
    body = ingest.payload(session.id, modules[:1], n_trials=3)
    body["tasks"][0]["module_version"] = 2**40  # past PostgreSQL's integer
    huge = await client.post("/api/submit", json=body, headers=p_headers)
    # Not in the battery: kept quarantined, its raw body only (no task row to overflow).
    assert huge.status_code == 202, huge.text
    assert huge.json()["problems"][0]["loc"] == ["body", "tasks", 0, "module_key"]


async def test_huge_option_codes_are_refused_at_the_edge(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    admin = await factories.create_user(db, is_admin=True)
    headers = await factories.auth_headers(db, settings, admin)
    response = await client.post(
        "/api/item-banks",
        json={
            "key": "bigcodes",
            "version": 1,
            "name": "Big codes",
            "items": [
                {
                    "item_id": "q1",
                    "stem": "How?",
                    "options": [{"code": 2**70, "label": "a"}, {"code": 0, "label": "b"}],
                    "reverse_scored": False,
                }
            ],
        },
        headers=headers,
    )
    assert response.status_code == 422, response.text
    assert response.json()["details"][0]["loc"][:4] == ["body", "items", 0, "options"]
    listed = await client.get("/api/item-banks", headers=headers)
    assert listed.status_code == 200
