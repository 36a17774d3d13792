"""Quarantine, the staff's side: who may list and reprocess, the list's pages, and the
session views (the device's and the staff's) of a session with a quarantined submission."""

from __future__ import annotations

from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.studies.models import StudyRole
from tests import factories, test_quarantine
from tests.test_quarantine import visit_body, with_focus_events
from tests.test_redcap_support import World

world = test_quarantine.world  # the fixture: a study, its SRT + CRT battery, a coordinator


async def test_reprocess_is_for_this_study_s_coordinators(
    client: AsyncClient, db: AsyncSession, settings: Settings, world: World
) -> None:
    plain, headers = await visit_body(db, settings, world, "P-EVE")
    receipt = await client.post("/api/submit", json=with_focus_events(plain), headers=headers)
    url = f"/api/submissions/{receipt.json()['submission_id']}/reprocess"
    other_study = await factories.create_study(db)
    outsider = await factories.create_user(db)
    await factories.add_member(db, other_study, outsider, StudyRole.coordinator)
    viewer = await factories.create_user(db)
    await factories.add_member(db, world.study, viewer, StudyRole.viewer)

    as_outsider = await client.post(
        url, json={}, headers=await factories.auth_headers(db, settings, outsider)
    )
    assert (as_outsider.status_code, as_outsider.json()["error_code"]) == (404, "not_found")
    listed = await client.get(
        "/api/submissions",
        params={"study_id": str(world.study.id)},
        headers=await factories.auth_headers(db, settings, outsider),
    )
    assert listed.status_code == 404
    viewer_headers = await factories.auth_headers(db, settings, viewer)
    as_viewer = await client.post(url, json={}, headers=viewer_headers)
    assert as_viewer.status_code == 403
    # A viewer may read the list: problems name places and rules, no personal data.
    seen = await client.get(
        "/api/submissions", params={"study_id": str(world.study.id)}, headers=viewer_headers
    )
    assert [i["submission_id"] for i in seen.json()["items"]] == [receipt.json()["submission_id"]]


async def test_the_list_pages_oldest_first(
    client: AsyncClient, db: AsyncSession, settings: Settings, world: World
) -> None:
    ids = []
    for code in ("P-F1", "P-F2", "P-F3"):
        plain, headers = await visit_body(db, settings, world, code, n_trials=5)
        response = await client.post("/api/submit", json=with_focus_events(plain), headers=headers)
        ids.append(response.json()["submission_id"])
    seen: list[str] = []
    cursor = None
    for _ in range(3):
        params = {"study_id": str(world.study.id), "limit": "2"}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/api/submissions", params=params, headers=world.headers)).json()
        seen += [i["submission_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    bad = await client.get(
        "/api/submissions",
        params={"study_id": str(world.study.id), "cursor": "nope"},
        headers=world.headers,
    )
    assert bad.status_code == 422


async def test_the_session_counts_its_module_in_and_staff_see_it_quarantined(
    client: AsyncClient, db: AsyncSession, settings: Settings, world: World
) -> None:
    plain, headers = await visit_body(db, settings, world, "P-GIL")
    session_id = plain["session_id"]
    response = await client.post("/api/submit", json=with_focus_events(plain), headers=headers)
    assert response.status_code == 202
    # The device resuming the session is not sent back to a module it has handed in.
    state = await client.get(f"/api/session/{session_id}", headers=headers)
    assert state.json()["submitted_module_keys"] == [world.srt]
    who = world.participants["P-GIL"]
    sessions = await client.get(f"/api/participants/{who.id}/sessions", headers=world.headers)
    [session] = sessions.json()
    [brief] = session["submissions"]
    assert (brief["id"], brief["status"], brief["tasks"]) == (
        response.json()["submission_id"],
        "quarantined",
        [],
    )
    assert brief["problems"] == response.json()["problems"]


async def test_a_site_scoped_coordinator_lists_and_reprocesses_only_their_site(
    client: AsyncClient, db: AsyncSession, settings: Settings, world: World
) -> None:
    held = {}
    for code, site in (("P-H1", world.site_a), ("P-H2", world.site_b)):
        who = await factories.create_participant(db, site, code=code)
        world.participants[code] = who
        plain, headers = await visit_body(db, settings, world, code, existing=who)
        response = await client.post("/api/submit", json=with_focus_events(plain), headers=headers)
        held[site.id] = response.json()["submission_id"]
    scoped = await factories.create_user(db)
    await factories.add_member(db, world.study, scoped, StudyRole.coordinator, sites=[world.site_a])
    headers = await factories.auth_headers(db, settings, scoped)
    listed = await client.get(
        "/api/submissions", params={"study_id": str(world.study.id)}, headers=headers
    )
    assert [i["submission_id"] for i in listed.json()["items"]] == [held[world.site_a.id]]
    other = await client.post(
        f"/api/submissions/{held[world.site_b.id]}/reprocess", json={}, headers=headers
    )
    assert other.status_code == 404
    own = await client.post(
        f"/api/submissions/{held[world.site_a.id]}/reprocess", json={}, headers=headers
    )
    assert (own.status_code, own.json()["status"]) == (200, "quarantined")
