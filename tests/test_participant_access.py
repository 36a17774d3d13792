"""Access codes: typable, one-time, expiring, hashed, rate-limited; the token they give."""

from __future__ import annotations

import re
from datetime import timedelta

from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.participant_auth.models import AccessCode
from server.studies.models import StudyRole
from tests import factories

CODE = re.compile(r"^[ABCDEFGHJKMNPQRSTUVWXYZ23456789]{4}-[ABCDEFGHJKMNPQRSTUVWXYZ23456789]{4}$")


async def _coordinator(db: AsyncSession, settings: Settings):  # type: ignore[no-untyped-def]
    study = await factories.create_study(db)
    site = await factories.create_site(db, study)
    user = await factories.create_user(db)
    await factories.add_member(db, study, user, StudyRole.coordinator)
    return study, site, await factories.auth_headers(db, settings, user)


async def test_enrolment_issues_a_code_that_logs_the_participant_in_once(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, site, headers = await _coordinator(db, settings)
    enrolled = await client.post(
        "/api/participants",
        params={"study_id": str(study.id)},
        json={"site_id": str(site.id), "participant_code": "ACC-1"},
        headers=headers,
    )
    assert enrolled.status_code == 201
    code = enrolled.json()["access_code"]
    assert CODE.match(code)
    # Stored hashed: the code itself is nowhere in the table.
    stored = (await db.execute(select(AccessCode.code_hash))).scalars().all()
    assert code not in stored and code.replace("-", "") not in stored

    typed = " " + code.lower().replace("-", " ") + " "  # how people type
    auth = await client.post("/api/participants/auth", json={"access_code": typed})
    assert auth.status_code == 200, auth.text
    token = auth.json()
    assert token["participant_id"] == enrolled.json()["id"]
    assert token["study_id"] == str(study.id)
    reused = await client.post("/api/participants/auth", json={"access_code": code})
    assert reused.status_code == 401 and reused.json()["error_code"] == "invalid_access_code"
    # The participant became active on first use.
    got = await client.get(f"/api/participants/{token['participant_id']}", headers=headers)
    assert got.json()["status"] == "active"


async def test_new_code_replaces_old_and_expired_codes_fail(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    _, site, headers = await _coordinator(db, settings)
    participant = await factories.create_participant(db, site)
    url = f"/api/participants/{participant.id}/access-code"
    first = (await client.post(url, headers=headers)).json()["access_code"]
    second = (await client.post(url, headers=headers)).json()["access_code"]
    assert first != second
    old = await client.post("/api/participants/auth", json={"access_code": first})
    assert old.status_code == 401
    for code in (
        await db.execute(select(AccessCode).where(AccessCode.participant_id == participant.id))
    ).scalars():
        code.expires_at = code.created_at - timedelta(seconds=1)
    await db.flush()
    expired = await client.post("/api/participants/auth", json={"access_code": second})
    assert expired.status_code == 401


async def test_withdrawn_participant_cannot_log_in_and_token_stops(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    _, site, headers = await _coordinator(db, settings)
    participant = await factories.create_participant(db, site)
    code = (
        await client.post(f"/api/participants/{participant.id}/access-code", headers=headers)
    ).json()["access_code"]
    token = (await client.post("/api/participants/auth", json={"access_code": code})).json()
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    assert (
        await client.get("/api/session/00000000-0000-4000-8000-000000000000", headers=bearer)
    ).status_code == 404
    withdrawn = await client.patch(
        f"/api/participants/{participant.id}", json={"status": "withdrawn"}, headers=headers
    )
    assert withdrawn.status_code == 200
    after = await client.get("/api/session/00000000-0000-4000-8000-000000000000", headers=bearer)
    assert after.status_code == 401
    again = await client.post(f"/api/participants/{participant.id}/access-code", headers=headers)
    assert again.status_code == 422 and again.json()["error_code"] == "participant_inactive"


async def test_guessing_codes_is_rate_limited(client: AsyncClient) -> None:
    statuses = [
        (await client.post("/api/participants/auth", json={"access_code": f"AAAA-AA{n:02d}"}))
        for n in range(11)
    ]
    assert [r.status_code for r in statuses[:10]] == [401] * 10
    assert statuses[10].status_code == 429
    assert int(statuses[10].headers["retry-after"]) >= 1


async def test_a_participant_token_on_a_staff_route_is_told_the_route_is_for_staff(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, site, headers = await _coordinator(db, settings)
    participant = await factories.create_participant(db, site)
    code = (
        await client.post(f"/api/participants/{participant.id}/access-code", headers=headers)
    ).json()["access_code"]
    token = (await client.post("/api/participants/auth", json={"access_code": code})).json()
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    for method, url in (
        ("GET", "/api/auth/me"),
        ("GET", f"/api/participants/{participant.id}"),
        ("GET", f"/api/participants/{participant.id}/sessions"),
        ("GET", "/api/studies"),
        ("POST", f"/api/participants?study_id={study.id}"),
    ):
        response = await client.request(method, url, headers=bearer, json={})
        assert response.status_code == 403, (url, response.text)
        body = response.json()
        assert body["error_code"] == "staff_only", (url, body)
        assert "staff" in body["message"] and "expired" not in body["message"]
        assert body["correlation_id"] == response.headers["X-Request-ID"]
    # The same token still does what it is for.
    own = await client.get("/api/session/00000000-0000-4000-8000-000000000000", headers=bearer)
    assert own.status_code == 404
