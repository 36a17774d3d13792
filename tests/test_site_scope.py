"""Site-scoped memberships through the API: assigning sites, lists and counts filtered, the
whole study out of a site-scoped member's hands. (Every route of another site's objects
answering 404 is tests/test_access_matrix.py's cross-site matrix.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from server.batteries.models import Battery
from server.core.config import Settings
from server.core.crypto import token_box
from server.outbox.models import OutboxEvent
from server.participants.models import Participant
from server.redcap.models import RedcapConnection, RedcapSyncState
from server.studies.models import Site, Study, StudyRole
from server.submissions.models import Submission
from server.users.models import User
from tests import factories
from tests import ingest_factories as ingest


@dataclass
class World:
    study: Study
    site_a: Site
    site_b: Site
    scoped: dict[str, str]  # a coordinator of site A only
    full: dict[str, str]  # a coordinator of the whole study
    outsider: User  # a user of no study yet


@pytest.fixture
async def world(db: AsyncSession, settings: Settings) -> World:
    study = await factories.create_study(db)
    site_a = await factories.create_site(db, study, code="A")
    site_b = await factories.create_site(db, study, code="B")
    scoped, full = await factories.create_user(db), await factories.create_user(db)
    await factories.add_member(db, study, scoped, StudyRole.coordinator, sites=[site_a])
    await factories.add_member(db, study, full, StudyRole.coordinator)
    return World(
        study=study,
        site_a=site_a,
        site_b=site_b,
        scoped=await factories.auth_headers(db, settings, scoped),
        full=await factories.auth_headers(db, settings, full),
        outsider=await factories.create_user(db),
    )


async def _submission(db: AsyncSession, participant: Participant, battery: Battery) -> OutboxEvent:
    """A submission of the participant and its job; returns the job."""
    session = await ingest.start_session(db, participant, battery)
    submission = Submission(
        client_submission_id=f"{participant.participant_code}-1",
        participant_id=participant.id,
        study_id=participant.study_id,
        session_id=session.id,
        checksum="0" * 64,
        raw_payload=b"{}",
    )
    db.add(submission)
    await db.flush()
    job = OutboxEvent(
        topic="archive.submission",
        payload={},
        study_id=participant.study_id,
        subject_id=submission.id,
    )
    db.add(job)
    await db.flush()
    return job


# ----- assigning sites -------------------------------------------------------------------------
async def test_members_are_limited_to_sites_of_their_study_through_the_api(
    client: AsyncClient, db: AsyncSession, world: World
) -> None:
    members = f"/api/studies/{world.study.id}/members"
    added = await client.post(
        members,
        json={
            "user_id": str(world.outsider.id),
            "role": "viewer",
            "site_ids": [str(world.site_b.id)],
        },
        headers=world.full,
    )
    assert added.status_code == 201, added.text
    assert added.json()["site_ids"] == [str(world.site_b.id)]

    url = f"{members}/{world.outsider.id}"
    widened = await client.patch(url, json={"site_ids": []}, headers=world.full)
    assert widened.status_code == 200, widened.text
    assert widened.json()["site_ids"] == [] and widened.json()["role"] == "viewer"

    both = [str(world.site_a.id), str(world.site_b.id)]
    narrowed = await client.patch(url, json={"site_ids": both}, headers=world.full)
    assert sorted(narrowed.json()["site_ids"]) == sorted(both)
    listed = {m["user_id"]: m for m in (await client.get(members, headers=world.full)).json()}
    assert sorted(listed[str(world.outsider.id)]["site_ids"]) == sorted(both)
    # Changing the role alone keeps the sites.
    promoted = await client.patch(url, json={"role": "researcher"}, headers=world.full)
    assert sorted(promoted.json()["site_ids"]) == sorted(both)


async def test_a_site_of_another_study_is_refused_and_changes_nothing(
    client: AsyncClient, db: AsyncSession, world: World
) -> None:
    foreign_site = await factories.create_site(db, await factories.create_study(db))
    members = f"/api/studies/{world.study.id}/members"
    body = {
        "user_id": str(world.outsider.id),
        "role": "coordinator",
        "site_ids": [str(world.site_a.id), str(foreign_site.id)],
    }
    refused = await client.post(members, json=body, headers=world.full)
    assert refused.status_code == 422
    envelope = refused.json()
    assert envelope["error_code"] == "validation_error"
    assert envelope["details"] == [
        {"loc": ["body", "site_ids", 1], "msg": "no such site in this study"}
    ]
    listed = (await client.get(members, headers=world.full)).json()
    assert str(world.outsider.id) not in {m["user_id"] for m in listed}

    body["site_ids"] = [str(world.site_a.id)]
    assert (await client.post(members, json=body, headers=world.full)).status_code == 201
    url = f"{members}/{world.outsider.id}"
    again = await client.patch(url, json={"site_ids": [str(foreign_site.id)]}, headers=world.full)
    assert again.status_code == 422
    listed = {m["user_id"]: m for m in (await client.get(members, headers=world.full)).json()}
    assert listed[str(world.outsider.id)]["site_ids"] == [str(world.site_a.id)]


async def test_a_site_scoped_coordinator_cannot_change_the_whole_study(
    client: AsyncClient, world: World
) -> None:
    study = f"/api/studies/{world.study.id}"
    params = {"study_id": str(world.study.id)}
    attempts = [
        ("PATCH", study, {"name": "Renamed"}, None),
        ("POST", f"{study}/sites", {"code": "C", "name": "Site C"}, None),
        ("PATCH", f"{study}/sites/{world.site_a.id}", {"name": "Mine"}, None),
        ("POST", f"{study}/members", {"user_id": str(world.outsider.id), "role": "viewer"}, None),
        ("POST", "/api/batteries", {"key": "v", "name": "V", "module_ids": []}, params),
        (
            "POST",
            "/api/redcap/connections",
            {"api_url": "https://redcap.example.org/api/", "token": "A" * 32},
            params,
        ),
    ]
    for method, url, body, query in attempts:
        response = await client.request(method, url, json=body, params=query, headers=world.scoped)
        assert response.status_code == 403, f"{method} {url}: {response.text}"
        assert response.json()["error_code"] == "site_scoped", f"{method} {url}"
    unchanged = await client.get(study, headers=world.full)
    assert unchanged.json()["name"] == world.study.name
    sites = (await client.get(f"{study}/sites", headers=world.full)).json()
    assert sorted(s["code"] for s in sites) == ["A", "B"]


# ----- lists and counts ------------------------------------------------------------------------
async def test_lists_show_a_site_scoped_member_their_sites_and_a_full_member_both(
    client: AsyncClient, db: AsyncSession, settings: Settings, world: World
) -> None:
    battery = await ingest.create_battery(db, world.study, await ingest.standard_modules(db))
    in_a = [await factories.create_participant(db, world.site_a) for _ in range(2)]
    in_b = [await factories.create_participant(db, world.site_b) for _ in range(3)]
    jobs = {p.id: await _submission(db, p, battery) for p in in_a + in_b}
    study_wide = RedcapConnection(
        study_id=world.study.id,
        api_url="https://redcap.example.org/api/",
        token_encrypted=token_box(settings).encrypt("0" * 32),
        token_last4="0000",
    )
    at_b = RedcapConnection(
        study_id=world.study.id,
        site_id=world.site_b.id,
        api_url="https://redcap.example.org/api/",
        token_encrypted=token_box(settings).encrypt("0" * 32),
        token_last4="0000",
    )
    db.add_all([study_wide, at_b])
    await db.flush()
    db.add_all(
        RedcapSyncState(
            submission_id=job.subject_id, connection_id=study_wide.id, study_id=world.study.id
        )
        for job in jobs.values()
    )
    await db.flush()
    params = {"study_id": str(world.study.id)}

    async def seen(headers: dict[str, str]) -> dict[str, set[str]]:
        async def get(url: str) -> Any:
            response = await client.get(url, params=params, headers=headers)
            assert response.status_code == 200, f"{url}: {response.text}"
            return response.json()

        participants = await get("/api/participants")
        sites = await get(f"/api/studies/{world.study.id}/sites")
        connections = await get("/api/redcap/connections")
        states = await get(f"/api/redcap/connections/{study_wide.id}/sync-states")
        job_list = await get("/api/jobs")
        return {
            "participants": {p["id"] for p in participants["items"]},
            "sites": {s["id"] for s in sites},
            "connections": {c["id"] for c in connections},
            "sync_states": {s["submission_id"] for s in states["items"]},
            "jobs": {j["id"] for j in job_list},
        }

    def expected(participants: list[Participant], sites: list[Site]) -> dict[str, set[str]]:
        sites_ids = {None} | {s.id for s in sites}  # the study-wide connection: every member's
        return {
            "participants": {str(p.id) for p in participants},
            "sites": {str(s.id) for s in sites},
            "connections": {str(c.id) for c in (study_wide, at_b) if c.site_id in sites_ids},
            "sync_states": {str(jobs[p.id].subject_id) for p in participants},
            "jobs": {str(jobs[p.id].id) for p in participants},
        }

    assert await seen(world.scoped) == expected(in_a, [world.site_a])
    assert await seen(world.full) == expected(in_a + in_b, [world.site_a, world.site_b])

    # Filtering by the other site names a site the scoped member cannot see.
    other = await client.get(
        "/api/participants",
        params={**params, "site_id": str(world.site_b.id)},
        headers=world.scoped,
    )
    assert other.status_code == 404 and other.json()["error_code"] == "not_found"


async def test_a_scope_change_applies_to_the_next_request(
    client: AsyncClient, db: AsyncSession, settings: Settings, world: World
) -> None:
    participant = await factories.create_participant(db, world.site_b)
    user = await factories.create_user(db)
    headers = await factories.auth_headers(db, settings, user)
    members = f"/api/studies/{world.study.id}/members"
    body = {"user_id": str(user.id), "role": "viewer", "site_ids": [str(world.site_b.id)]}
    assert (await client.post(members, json=body, headers=world.full)).status_code == 201
    url = f"/api/participants/{participant.id}"
    assert (await client.get(url, headers=headers)).status_code == 200
    moved = {"site_ids": [str(world.site_a.id)]}
    assert (await client.patch(f"{members}/{user.id}", json=moved, headers=world.full)).is_success
    assert (await client.get(url, headers=headers)).status_code == 404


# ----- writes at another site ------------------------------------------------------------------
async def test_enrolling_moving_or_importing_into_another_site_is_an_unknown_site(
    client: AsyncClient, db: AsyncSession, world: World
) -> None:
    params = {"study_id": str(world.study.id)}
    enrol = await client.post(
        "/api/participants",
        params=params,
        json={"site_id": str(world.site_b.id), "participant_code": "B-001"},
        headers=world.scoped,
    )
    assert enrol.status_code == 422
    assert enrol.json()["details"][0]["loc"] == ["body", "site_id"]

    mine = await client.post(
        "/api/participants",
        params=params,
        json={"site_id": str(world.site_a.id), "participant_code": "A-001"},
        headers=world.scoped,
    )
    assert mine.status_code == 201, mine.text
    url = f"/api/participants/{mine.json()['id']}"
    moved = await client.patch(url, json={"site_id": str(world.site_b.id)}, headers=world.scoped)
    assert moved.status_code == 422
    assert (await client.get(url, headers=world.scoped)).json()["site_id"] == str(world.site_a.id)

    imported = await client.post(
        "/api/participants/import",
        params=params,
        files={"file": ("p.csv", b"participant_code,site_code\nA-002,A\nB-002,B\n", "text/csv")},
        headers=world.scoped,
    )
    assert imported.status_code == 422
    rejected = imported.json()["details"]["rejected"]
    assert [(r["row"], r["errors"]) for r in rejected] == [
        (3, ["site_code: no such site in this study"])
    ]
    listed = await client.get("/api/participants", params=params, headers=world.full)
    assert [p["participant_code"] for p in listed.json()["items"]] == ["A-001"]
