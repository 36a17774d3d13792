"""Session start/resume/end, and offline batches where one bad item blocks nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from httpx import AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.submissions.models import Submission
from tests import factories
from tests import ingest_factories as ingest


async def _participant(db: AsyncSession, settings: Settings):  # type: ignore[no-untyped-def]
    study = await factories.create_study(db)
    participant = await factories.create_participant(db, await factories.create_site(db, study))
    modules = await ingest.standard_modules(db)
    battery = await ingest.create_battery(db, study, modules)
    return (
        participant,
        battery,
        modules,
        await ingest.participant_headers(db, settings, participant),
    )


async def test_start_resume_and_end(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    _, battery, modules, headers = await _participant(db, settings)
    start = {
        "session_id": str(uuid.uuid4()),
        "battery_id": str(battery.id),
        "device": {"model": "Pixel 8", "os": "Android 15"},
        "app_version": "2.3.1",
        "client_started_at": datetime.now(UTC).isoformat(),
    }
    first = await client.post("/api/session/start", json=start, headers=headers)
    assert first.status_code == 201, first.text
    assert [m["key"] for m in first.json()["modules"]] == [m.key for m in modules]
    body = ingest.payload(uuid.UUID(start["session_id"]), modules[:1], n_trials=5)
    assert (await client.post("/api/submit", json=body, headers=headers)).status_code == 201
    resumed = await client.post("/api/session/start", json=start, headers=headers)
    assert resumed.status_code == 200
    assert resumed.json()["submitted_module_keys"] == [modules[0].key]
    assert resumed.json()["status"] == "in_progress"
    end = {"session_id": start["session_id"], "status": "completed"}
    ended = await client.post("/api/session/end", json=end, headers=headers)
    assert ended.status_code == 200 and ended.json()["status"] == "completed"
    assert (await client.post("/api/session/end", json=end, headers=headers)).status_code == 200
    conflict = await client.post(
        "/api/session/end", headers=headers, json={**end, "status": "abandoned"}
    )
    assert conflict.status_code == 409


async def test_start_with_a_battery_of_another_study_is_rejected(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    *_, headers = await _participant(db, settings)
    other_study = await factories.create_study(db)
    other_battery = await ingest.create_battery(db, other_study, await ingest.standard_modules(db))
    response = await client.post(
        "/api/session/start",
        headers=headers,
        json={
            "session_id": str(uuid.uuid4()),
            "battery_id": str(other_battery.id),
            "client_started_at": datetime.now(UTC).isoformat(),
        },
    )
    assert response.status_code == 422
    assert response.json()["details"][0]["loc"] == ["body", "battery_id"]


async def test_batch_sync_with_good_duplicate_and_bad_items(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    participant, battery, modules, headers = await _participant(db, settings)
    session_id = uuid.uuid4()
    good = ingest.payload(session_id, modules, n_trials=8)
    bad = ingest.payload(session_id, modules, n_trials=8)
    bad["tasks"][2]["summary"]["mean_rt_ms"] = "fast"
    later_good = ingest.payload(session_id, modules[:2], n_trials=3)
    items = [
        {
            "type": "session_start",
            "data": {
                "session_id": str(session_id),
                "battery_id": str(battery.id),
                "client_started_at": datetime.now(UTC).isoformat(),
            },
        },
        {"type": "submission", "data": good},
        {"type": "submission", "data": good},  # the phone retried
        {"type": "submission", "data": bad},  # a summary its module refuses
        {"type": "submission", "data": {"session_id": "x"}},  # not even a submission
        {"type": "submission", "data": later_good},  # after the bad ones: still stored
        {"type": "session_end", "data": {"session_id": str(session_id), "status": "completed"}},
    ]
    response = await client.post("/api/sync", json={"items": items}, headers=headers)
    assert response.status_code == 200, response.text
    result = response.json()
    assert [i["status"] for i in result["items"]] == [
        "stored",
        "stored",
        "duplicate",
        "rejected",
        "rejected",
        "stored",
        "stored",
    ]
    assert (result["stored"], result["duplicate"], result["rejected"]) == (4, 1, 2)
    assert result["items"][2]["id"] == result["items"][1]["id"]
    assert result["items"][3]["error"]["details"][0]["loc"] == [
        "body",
        "tasks",
        2,
        "summary",
        "mean_rt_ms",
    ]
    assert result["items"][4]["error"]["details"][0]["loc"][:4] == ["body", "items", 4, "data"]
    count = await db.scalar(
        select(func.count())
        .select_from(Submission)
        .where(Submission.participant_id == participant.id)
    )
    assert count == 2
    # The whole batch again, as a device that never saw the answer would send it.
    replay = (await client.post("/api/sync", json={"items": items}, headers=headers)).json()
    assert [i["status"] for i in replay["items"]] == [
        "duplicate",
        "duplicate",
        "duplicate",
        "rejected",
        "rejected",
        "duplicate",
        "duplicate",  # the session had already ended: nothing stored
    ]
    assert (replay["stored"], replay["duplicate"], replay["rejected"]) == (0, 5, 2)
    assert (
        await db.scalar(
            select(func.count())
            .select_from(Submission)
            .where(Submission.participant_id == participant.id)
        )
        == 2
    )


async def test_replaying_a_whole_batch_reports_every_item_a_duplicate(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    _, battery, modules, headers = await _participant(db, settings)
    session_id = uuid.uuid4()
    items = [
        {
            "type": "session_start",
            "data": {
                "session_id": str(session_id),
                "battery_id": str(battery.id),
                "client_started_at": datetime.now(UTC).isoformat(),
            },
        },
        {"type": "submission", "data": ingest.payload(session_id, modules, n_trials=4)},
        {"type": "session_end", "data": {"session_id": str(session_id), "status": "completed"}},
    ]
    first = (await client.post("/api/sync", json={"items": items}, headers=headers)).json()
    assert (first["stored"], first["duplicate"], first["rejected"]) == (3, 0, 0)
    # The device lost the answer and sends the same batch again: nothing new is stored.
    replay = await client.post("/api/sync", json={"items": items}, headers=headers)
    assert replay.status_code == 200, replay.text
    body = replay.json()
    assert (body["stored"], body["duplicate"], body["rejected"]) == (0, 3, 0)
    assert [i["status"] for i in body["items"]] == ["duplicate"] * 3
    assert [i["id"] for i in body["items"]] == [i["id"] for i in first["items"]]
    # A session that ended differently on the server is a conflict, not a duplicate.
    abandoned = {**items[2], "data": {"session_id": str(session_id), "status": "abandoned"}}
    conflict = (await client.post("/api/sync", json={"items": [abandoned]}, headers=headers)).json()
    assert conflict["items"][0]["status"] == "rejected"
    assert conflict["items"][0]["error"]["error_code"] == "session_ended"
