"""A REDCap push's rules: where its sessions go (no route: skipped; a route changed: numbered
afresh in the new project; the mapping as saved when the sender gets its lock), who may push
which sessions, and bad requests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from httpx import AsyncClient
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.assessment_sessions.models import AssessmentSession
from server.core.config import Settings
from server.exports import redcap_push
from server.outbox import service as outbox
from server.outbox.models import OutboxEvent
from server.redcap import routing
from server.redcap.batch import own_transaction
from server.redcap.sync import sync_submission
from server.studies.models import StudyRole
from server.submissions.models import Submission
from tests import factories
from tests.redcap_standin import RedcapStandin, classic_project
from tests.test_redcap_push import PUSHES, ago, classic, push, remap, run_push_job, world
from tests.test_redcap_support import (
    GOOD,
    World,
    connect_and_map,
    direct_submission,
    instances,
    participant,
    session_mapping,
)

__all__ = ["classic", "world"]  # fixtures, used by name


async def test_sessions_with_no_connection_for_their_site_are_skipped_with_the_reason(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
) -> None:
    # Site A's own connection only: site B's sessions have nowhere to go.
    response = await client.post(
        "/api/redcap/connections", params={"study_id": str(world.study.id)},
        json={"api_url": classic.url, "token": classic.token, "site_id": str(world.site_a.id)},
        headers=world.headers,
    )  # fmt: skip
    assert response.status_code == 201, response.text
    bob = await participant(db, world, "P-BOB", site=world.site_b)
    await direct_submission(db, world, bob, summary=GOOD)
    asked = (await push(client, world)).json()
    assert await run_push_job(db, settings, asked["job_id"]) == "succeeded"
    page = (await client.get(f"{PUSHES}/{asked['id']}/records", headers=world.headers)).json()
    [record] = page["items"]
    assert (record["status"], record["error"]) == ("skipped", redcap_push.NO_CONNECTION)


async def test_bad_requests_answer_the_error_envelope(
    client: AsyncClient, db: AsyncSession, world: World, classic: RedcapStandin
) -> None:
    none_yet = await push(client, world)
    assert (none_yet.status_code, none_yet.json()["error_code"]) == (409, "redcap_not_connected")
    await connect_and_map(client, world, classic)
    for body, status in (
        ({"date_from": "2026-12-02", "date_to": "2026-12-01"}, 422),
        ({"formats": ["csv"]}, 422),
        ({"participant_statuses": ["sleeping"]}, 422),
        ({"site_ids": [str(uuid.uuid4())]}, 404),
    ):
        response = await push(client, world, **body)
        assert response.status_code == status, (body, response.text)
        assert {"error_code", "message"} <= set(response.json()), response.text
    missing = await client.get(f"{PUSHES}/{uuid.uuid4()}", headers=world.headers)
    assert (missing.status_code, missing.json()["error_code"]) == (404, "not_found")
    assert (await db.scalar(select(OutboxEvent.id).where(
        OutboxEvent.topic == outbox.EXPORT_REDCAP_PUSH))) is None  # fmt: skip


async def test_coordinators_push_researchers_and_viewers_do_not_site_members_their_sites(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
) -> None:
    await connect_and_map(client, world, classic)
    whole = (await push(client, world)).json()
    headers = {}
    for name, role, sites in (
        ("viewer", StudyRole.viewer, []),
        ("researcher", StudyRole.researcher, []),
        ("site_a", StudyRole.coordinator, [world.site_a]),
    ):
        user = await factories.create_user(db)
        await factories.add_member(db, world.study, user, role, sites=sites)
        headers[name] = await factories.auth_headers(db, settings, user)
    for name in ("viewer", "researcher"):
        refused = await push(client, world, headers[name])
        assert (refused.status_code, refused.json()["error_code"]) == (403, "forbidden"), name
        seen = await client.get(f"{PUSHES}/{whole['id']}", headers=headers[name])
        assert seen.status_code == 403, name
    # A coordinator of site A pushes site A's sessions; site B's is no site of theirs (404),
    # nor is a whole-study push.
    own = await push(client, world, headers["site_a"])
    assert own.status_code == 202, own.text
    assert own.json()["filters"]["site_ids"] == [str(world.site_a.id)]
    other = await push(client, world, headers["site_a"], site_ids=[str(world.site_b.id)])
    assert (other.status_code, other.json()["error_code"]) == (404, "not_found")
    for path in (f"{PUSHES}/{whole['id']}", f"{PUSHES}/{whole['id']}/records"):
        hidden = await client.get(path, headers=headers["site_a"])
        assert hidden.status_code == 404, path
    mine = await client.get(f"{PUSHES}/{own.json()['id']}/records", headers=headers["site_a"])
    assert mine.status_code == 200, mine.text
    # Listed newest first: the study's coordinator sees both, site A's only its own.
    study = {"study_id": str(world.study.id)}
    listed = (await client.get(PUSHES, params=study, headers=world.headers)).json()
    assert [p["id"] for p in listed["items"]] == [own.json()["id"], whole["id"]]
    assert listed["items"][1]["total"] is None and listed["next_cursor"] is None
    scoped = (await client.get(PUSHES, params=study, headers=headers["site_a"])).json()
    assert [p["id"] for p in scoped["items"]] == [own.json()["id"]]
    refused_list = await client.get(PUSHES, params=study, headers=headers["researcher"])
    assert refused_list.status_code == 403


async def test_a_sender_that_waited_for_its_lock_builds_with_the_mapping_saved_meanwhile(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
) -> None:
    """A sync task routes, then waits for its connection's sender: a mapping saved while it
    waited (and a push's reset after it) is sent, never the one it read before waiting."""
    connection_id = await connect_and_map(client, world, classic)
    ann = await participant(db, world, "P-ANN")
    first = await direct_submission(db, world, ann, summary=GOOD)
    async with own_transaction(db) as session:
        routed = await routing.route(session, settings, first)
    assert routed.plan is not None
    await remap(client, world, connection_id,
                fields=[{"source": "session.device", "field": "session_notes"}])  # fmt: skip
    async with own_transaction(db) as session:
        now = await routing.current_plan(session, routed.plan)
    assert now.document["fields"] == [{"source": "session.device", "field": "session_notes"}]
    assert now.mapping_version != routed.plan.mapping_version
    async with own_transaction(db) as session:
        assert await routing.current_plan(session, now) is now


@pytest.mark.parametrize("added", ["before the push", "while it runs"])
async def test_sessions_whose_route_changed_are_numbered_afresh_in_their_new_project(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
    added: str,
) -> None:
    """Site A gets a REDCap project of its own after its sessions went to the study's: the
    push sends them there as that project's instances (1, 2), not the old project's (2, 3)."""
    await connect_and_map(client, world, classic)
    ann = await participant(db, world, "P-ANN")
    ids = [await direct_submission(db, world, ann, summary=GOOD, received_at=ago(30 - n))
           for n in range(3)]  # fmt: skip
    assert (await sync_submission(db, settings, ids[0])).synced == 3
    january = datetime(2026, 1, 5, 9, tzinfo=UTC)
    await db.execute(update(AssessmentSession).where(AssessmentSession.id == (
        select(Submission.session_id).where(Submission.id == ids[0]).scalar_subquery()
    )).values(started_at=january))  # fmt: skip
    asked = (await push(client, world, date_from="2026-02-01")).json()

    async def own_project() -> None:
        made = await client.post(
            "/api/redcap/connections", params={"study_id": str(world.study.id)},
            json={"api_url": site_project.url, "token": site_project.token,
                  "site_id": str(world.site_a.id)},
            headers=world.headers,
        )  # fmt: skip
        assert made.status_code == 201, made.text
        mapped = await client.put(f"/api/redcap/connections/{made.json()['id']}/mapping",
                                  json=session_mapping(world), headers=world.headers)  # fmt: skip
        assert mapped.status_code == 200, mapped.text

    with RedcapStandin(classic_project("Site A")) as site_project:
        if added == "before the push":
            await own_project()
        else:
            async with own_transaction(db) as session:
                assert (await redcap_push.choose(session, uuid.UUID(asked["id"]))).total == 2
            await own_project()
        assert await run_push_job(db, settings, asked["job_id"]) == "succeeded"
        there = sorted((r, i) for r, i, _ in instances(site_project))
        assert there == [("P-ANN", 1), ("P-ANN", 2)]
    assert sorted((r, i) for r, i, _ in instances(classic)) == [("P-ANN", n) for n in (1, 2, 3)]
    page = (await client.get(f"{PUSHES}/{asked['id']}/records", headers=world.headers)).json()
    results = sorted((r["instance"], r["status"]) for r in page["items"])
    assert results == [(1, "synced"), (2, "synced")]
