"""Quarantine: a submission whose tasks do not fit their modules is kept (202), listed for the
study's coordinators with its problems, held back from REDCap, and released by a reprocess
once a corrected module version is published: then it is sent to REDCap, once."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit.models import AuditAction
from server.core.config import Settings
from server.outbox.models import OutboxEvent
from server.participants.models import Participant
from server.redcap.models import RedcapSyncState
from server.redcap.sync import sync_submission
from server.submissions.models import Submission, SubmissionTask
from tests import factories
from tests import ingest_factories as ingest
from tests.audit_helpers import entries
from tests.redcap_standin import RedcapStandin, classic_project
from tests.test_redcap_support import (
    World,
    connect_and_map,
    imports,
    instances,
    make_world,
    participant,
    running,
    sync_outbox_rows,
)


@pytest.fixture
def classic() -> Iterator[RedcapStandin]:
    yield from running(classic_project())


@pytest.fixture
async def world(db: AsyncSession, settings: Settings) -> World:
    return await make_world(db, settings)


def with_focus_events(body: dict[str, Any]) -> dict[str, Any]:
    """A newer app records focus loss per trial, a field version 1 of the module forbids."""
    changed = copy.deepcopy(body)
    for i, trial in enumerate(changed["tasks"][0]["trials"]):
        trial["focus_lost"] = i == 4
    return changed


async def visit_body(
    db: AsyncSession,
    settings: Settings,
    world: World,
    code: str,
    *,
    n_trials: int = 20,
    existing: Participant | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """A session of the SRT module for a participant (a new one at site A by default)."""
    who = existing or await participant(db, world, code)
    session = await ingest.start_session(db, who, world.battery)
    headers = await ingest.participant_headers(db, settings, who)
    return ingest.payload(session.id, world.modules[:1], n_trials=n_trials), headers


async def publish_corrected_srt(
    client: AsyncClient, db: AsyncSession, settings: Settings, world: World
) -> int:
    """An administrator publishes version 2 of the SRT module, which allows focus_lost."""
    admin = await factories.create_user(db, is_admin=True)
    headers = await factories.auth_headers(db, settings, admin)
    draft = await client.post(f"/api/modules/{world.modules[0].id}/versions", headers=headers)
    assert draft.status_code == 201, draft.text
    trial_schema = copy.deepcopy(ingest.RT_TRIAL)
    trial_schema["properties"]["focus_lost"] = {"type": "boolean"}
    patched = await client.patch(
        f"/api/modules/{draft.json()['id']}", json={"trial_schema": trial_schema}, headers=headers
    )
    assert patched.status_code == 200, patched.text
    published = await client.post(f"/api/modules/{draft.json()['id']}/publish", headers=headers)
    assert published.status_code == 200, published.text
    version: int = published.json()["version"]
    return version


async def quarantine_list(client: AsyncClient, world: World) -> list[dict[str, Any]]:
    response = await client.get(
        "/api/submissions",
        params={"study_id": str(world.study.id), "status": "quarantined"},
        headers=world.headers,
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_quarantined_is_kept_listed_unsynced_then_released_and_synced_once(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
) -> None:
    connection_id = await connect_and_map(client, world, classic)
    good_body, bob_headers = await visit_body(db, settings, world, "P-BOB", n_trials=30)
    good = await client.post("/api/submit", json=good_body, headers=bob_headers)
    assert good.status_code == 201, good.text
    plain, ann_headers = await visit_body(db, settings, world, "P-ANN")
    body = with_focus_events(plain)

    response = await client.post("/api/submit", json=body, headers=ann_headers)
    assert response.status_code == 202, response.text
    receipt = response.json()
    submission_id = uuid.UUID(receipt["submission_id"])
    assert receipt["status"] == "quarantined"
    assert [(p["task_index"], p["trial_index"], p["field"], p["rule"])
            for p in receipt["problems"]] == [
        (0, 0, "trials[0]", "schema_additionalProperties")
    ]  # fmt: skip
    stored = await db.get(Submission, submission_id)
    assert stored is not None and stored.checksum == receipt["checksum"]

    # Held back from REDCap: no sync row, and a sync of the study sends the other one only.
    assert await sync_outbox_rows(db, submission_id) == []
    outcome = await sync_submission(db, settings, uuid.UUID(good.json()["submission_id"]))
    await db.commit()
    assert (outcome.status, outcome.batch) == ("synced", 1)
    # Even a sync task aimed at it by hand sends nothing and records no state.
    assert (await sync_submission(db, settings, submission_id)).status == "quarantined"
    assert await db.get(RedcapSyncState, submission_id) is None
    assert {record for record, _, _ in instances(classic)} == {"P-BOB"}
    preview = await client.get(
        f"/api/redcap/connections/{connection_id}/preview",
        params={"submission_id": str(submission_id)},
        headers=world.headers,
    )
    assert (preview.status_code, preview.json()["error_code"]) == (409, "submission_quarantined")

    # The coordinator sees it, with its problems; the device's replay gets the same receipt.
    [listed] = await quarantine_list(client, world)
    assert listed["submission_id"] == str(submission_id)
    assert listed["problems"] == receipt["problems"]
    full = await client.get(f"/api/submissions/{submission_id}", headers=world.headers)
    assert full.status_code == 200
    assert full.json()["tasks"][0]["trials"][4]["focus_lost"] is True  # as the body sent it
    replay = await client.post("/api/submit", json=body, headers=ann_headers)
    assert (replay.status_code, replay.json()) == (202, receipt)
    assert replay.headers["idempotent-replayed"] == "true"

    # Reprocessed against the battery's own version: still quarantined, and it says who tried.
    url = f"/api/submissions/{submission_id}/reprocess"
    again = await client.post(url, json={"module_versions": "battery"}, headers=world.headers)
    assert again.status_code == 200, again.text
    assert (again.json()["status"], again.json()["problems"]) == (
        "quarantined",
        receipt["problems"],
    )
    assert again.json()["reprocessed_at"] is not None
    assert again.json()["reprocessed_by"] is not None

    # A corrected version is published; reprocessed against it, the submission is accepted.
    version = await publish_corrected_srt(client, db, settings, world)
    released = await client.post(url, json={"module_versions": "latest"}, headers=world.headers)
    assert released.status_code == 200, released.text
    assert (released.json()["status"], released.json()["problems"]) == ("accepted", [])
    [task] = released.json()["tasks"]
    assert (task["module_key"], task["module_version"], task["n_trials"]) == (
        world.srt,
        version,
        20,
    )
    assert released.json()["checksum"] == receipt["checksum"]  # the body never changes
    assert await quarantine_list(client, world) == []
    assert len(await sync_outbox_rows(db, submission_id)) == 1
    topics = await db.scalars(
        select(OutboxEvent.topic).where(OutboxEvent.subject_id == submission_id)
    )
    assert sorted(topics) == ["archive.submission", "redcap.sync_submission", "scoring.submission"]

    preview = await client.get(
        f"/api/redcap/connections/{connection_id}/preview",
        params={"submission_id": str(submission_id)},
        headers=world.headers,
    )
    assert preview.status_code == 200, preview.text
    assert preview.json()["records"][0]["srt_n_trials"] == "20"

    # Now it goes to REDCap, once.
    outcome = await sync_submission(db, settings, submission_id)
    await db.commit()
    assert (outcome.status, outcome.batch) == ("synced", 1)
    assert (await sync_submission(db, settings, submission_id)).calls == 0
    ann_rows = [(r, i, row["srt_n_trials"]) for r, i, row in instances(classic) if r == "P-ANN"]
    assert ann_rows == [("P-ANN", 1, "20")]
    assert len(imports(classic)) == 2  # P-BOB's, then P-ANN's

    # Accepted now: a second reprocess is refused, and the device's replay answers 200.
    twice = await client.post(url, json={}, headers=world.headers)
    assert twice.status_code == 409
    assert twice.json()["error_code"] == "submission_not_quarantined"
    late = await client.post("/api/submit", json=body, headers=ann_headers)
    assert (late.status_code, late.json()["status"]) == (200, "accepted")
    # Each reprocess is in the audit trail, the refused one not.
    trail = await entries(db, AuditAction.submission_reprocessed, submission_id)
    assert [e.summary for e in trail] == [
        {"status": "quarantined", "module_versions": "battery", "problems": 1},
        {"status": "accepted", "module_versions": "latest", "problems": 0},
    ]
    assert {e.study_id for e in trail} == {world.study.id}
    assert {e.site_id for e in trail} == {world.site_a.id}


async def test_same_key_other_body_is_still_409_and_the_quarantined_one_stays(
    client: AsyncClient, db: AsyncSession, settings: Settings, world: World
) -> None:
    plain, headers = await visit_body(db, settings, world, "P-CAT")
    body = with_focus_events(plain)
    assert (await client.post("/api/submit", json=body, headers=headers)).status_code == 202
    other = copy.deepcopy(body)
    other["tasks"][0]["trials"][0]["rt_ms"] += 1
    conflict = await client.post("/api/submit", json=other, headers=headers)
    assert conflict.status_code == 409
    assert conflict.json()["error_code"] == "idempotency_conflict"
    count = await db.scalar(
        select(func.count())
        .select_from(Submission)
        .where(Submission.client_submission_id == body["client_submission_id"])
    )
    assert count == 1


async def test_reprocess_names_versions_it_cannot_use_and_changes_nothing(
    client: AsyncClient, db: AsyncSession, settings: Settings, world: World
) -> None:
    plain, headers = await visit_body(db, settings, world, "P-DAN")
    receipt = await client.post("/api/submit", json=with_focus_events(plain), headers=headers)
    url = f"/api/submissions/{receipt.json()['submission_id']}/reprocess"
    cases = [
        ({"module_versions": {world.srt: 7}}, f"no published version 7 of {world.srt}"),
        ({"module_versions": {"not_in_battery": 1}}, "not a module of this session's battery"),
        ({"module_versions": "newest"}, None),
        ({"module_versions": {world.srt: 2**40}}, None),  # past PostgreSQL's integer
    ]
    for body, words in cases:
        response = await client.post(url, json=body, headers=world.headers)
        assert response.status_code == 422, response.text
        if words:
            assert words in response.json()["details"][0]["msg"]
    submission = await db.get(Submission, uuid.UUID(receipt.json()["submission_id"]))
    assert submission is not None
    await db.refresh(submission)
    assert (submission.status.value, submission.reprocessed_at) == ("quarantined", None)
    tasks = await db.scalar(
        select(func.count())
        .select_from(SubmissionTask)
        .where(SubmissionTask.submission_id == submission.id)
    )
    assert tasks == 0
