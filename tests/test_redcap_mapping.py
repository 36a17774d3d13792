"""The field mapping: checked against the project's metadata at save, and the preview."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from tests.redcap_standin import RedcapStandin, classic_project, longitudinal_project
from tests.test_redcap_support import (
    World,
    connect_and_map,
    create_connection,
    direct_submission,
    make_world,
    participant,
    running,
    session_mapping,
    submit,
)


@pytest.fixture
def classic() -> Iterator[RedcapStandin]:
    yield from running(classic_project())


@pytest.fixture
def longitudinal() -> Iterator[RedcapStandin]:
    yield from running(longitudinal_project())


@pytest.fixture
async def world(db: AsyncSession, settings: Settings) -> World:
    return await make_world(db, settings)


async def _put(
    client: AsyncClient, world: World, connection_id: str, document: dict[str, Any]
) -> Any:
    return await client.put(
        f"/api/redcap/connections/{connection_id}/mapping", json=document, headers=world.headers
    )


async def test_mapping_is_saved_with_what_redcap_said_of_each_field(
    client: AsyncClient, world: World, classic: RedcapStandin
) -> None:
    connection = await create_connection(client, world, classic)
    missing = await client.get(
        f"/api/redcap/connections/{connection['id']}/mapping", headers=world.headers
    )
    assert missing.status_code == 404
    saved = await _put(client, world, connection["id"], session_mapping(world))
    assert saved.status_code == 200, saved.text
    body = saved.json()
    assert body["document"] == session_mapping(world)
    assert body["targets"]["srt_n_trials"] == {
        "form": "cognitive_session",
        "field_type": "text",
        "validation": "integer",
    }
    assert body["targets"]["session_notes"]["field_type"] == "notes"
    read = await client.get(
        f"/api/redcap/connections/{connection['id']}/mapping", headers=world.headers
    )
    assert read.json() == body
    assert {c.content for c in classic.calls} >= {"project", "metadata", "exportFieldNames"}


async def test_a_field_redcap_lacks_is_refused_naming_it_with_redcaps_list(
    client: AsyncClient, world: World, classic: RedcapStandin
) -> None:
    connection = await create_connection(client, world, classic)
    document = session_mapping(world)
    document["fields"][2]["field"] = "srt_median_rt_ms"
    refused = await _put(client, world, connection["id"], document)
    assert refused.status_code == 422
    envelope = refused.json()
    assert envelope["error_code"] == "invalid_mapping"
    [problem] = envelope["details"]
    assert problem["loc"] == ["body", "fields", 2, "field"]
    assert "srt_median_rt_ms" in problem["msg"]
    assert "srt_mean_rt_ms" in problem["redcap_fields"]
    assert "conditions___1" in problem["redcap_fields"]  # REDCap's export field names


@pytest.mark.parametrize(
    ("change", "loc", "words"),
    [
        # A field of another form than the repeating instrument.
        (lambda d: d["fields"].append({"source": "session.date", "field": "enrol_date"}),
         ["body", "fields", 5, "field"], "not on the repeating instrument"),
        # A number into a date field.
        (lambda d: d["fields"].__setitem__(0, {"source": "module.{srt}.mean_rt_ms",
                                                "field": "session_date"}),
         ["body", "fields", 0, "field"], "date_ymd validation cannot hold a number"),
        # A text source into a number field.
        (lambda d: d["fields"].__setitem__(2, {"source": "session.device",
                                                "field": "srt_mean_rt_ms"}),
         ["body", "fields", 2, "field"], "cannot hold text"),
        # Events in a classic project.
        (lambda d: d.update(event="baseline_arm_1"), ["body", "event"], "classic project"),
        (lambda d: d.update(repeating_instrument="enrollment"),
         ["body", "repeating_instrument"], "not a repeating instrument"),
        (lambda d: d.update(record_id_field="age"), ["body", "record_id_field"], "record_id"),
        (lambda d: d["fields"].__setitem__(2, {"source": "module.{srt}.median_rt",
                                                "field": "srt_mean_rt_ms"}),
         ["body", "fields", 2, "source"], "has no metric 'median_rt'"),
        (lambda d: d["fields"].__setitem__(2, {"source": "module.nback.score",
                                                "field": "srt_mean_rt_ms"}),
         ["body", "fields", 2, "source"], "no module 'nback'"),
    ],
)  # fmt: skip
async def test_mapping_problems_are_422_naming_the_place(
    client: AsyncClient,
    world: World,
    classic: RedcapStandin,
    change: Any,
    loc: list[Any],
    words: str,
) -> None:
    connection = await create_connection(client, world, classic)
    document = session_mapping(world)
    change(document)
    for item in document["fields"]:
        item["source"] = item["source"].replace("{srt}", world.srt)
    refused = await _put(client, world, connection["id"], document)
    assert refused.status_code == 422, refused.text
    details = refused.json()["details"]
    assert [d["loc"] for d in details] == [loc], details
    assert words in details[0]["msg"]


async def test_a_date_source_into_a_date_field_and_metrics_into_text_fields_fit(
    client: AsyncClient, world: World, classic: RedcapStandin
) -> None:
    connection = await create_connection(client, world, classic)
    document = session_mapping(world)
    document["fields"] = [
        {"source": "session.started_at", "field": "session_date"},  # date_ymd: the date part
        {"source": f"module.{world.srt}.accuracy", "field": "srt_mean_rt_ms"},  # number
        {"source": f"module.{world.srt}.mean_rt_ms", "field": "session_notes"},  # notes
    ]
    assert (await _put(client, world, connection["id"], document)).status_code == 200


async def test_longitudinal_mapping_needs_a_known_event(
    client: AsyncClient, world: World, longitudinal: RedcapStandin
) -> None:
    connection = await create_connection(client, world, longitudinal)
    no_event = await _put(client, world, connection["id"], session_mapping(world))
    assert no_event.status_code == 422
    assert no_event.json()["details"][0]["loc"] == ["body", "event"]
    unknown = await _put(client, world, connection["id"], session_mapping(world, event="visit_11"))
    assert unknown.status_code == 422
    problem = unknown.json()["details"][0]
    assert problem["loc"] == ["body", "event"] and "visit_11" in problem["msg"]
    assert problem["events"] == ["baseline_arm_1", "month_6_arm_1"]
    ok = await _put(client, world, connection["id"], session_mapping(world, event="month_6_arm_1"))
    assert ok.status_code == 200, ok.text
    enrolment = session_mapping(world, event="month_6_arm_1", repeating_instrument=None)
    enrolment["fields"] = [{"source": "session.date", "field": "enrol_date"}]
    wrong_event = await _put(client, world, connection["id"], enrolment)
    assert wrong_event.status_code == 422
    assert "not designated for event 'month_6_arm_1'" in wrong_event.json()["details"][0]["msg"]


async def test_preview_is_the_row_the_sync_would_send(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
) -> None:
    connection_id = await connect_and_map(client, world, classic)
    jane = await participant(db, world, "P-JANE")
    jane.timezone = "Europe/Paris"
    await db.flush()
    started = datetime(2024, 3, 2, 22, 30, 5, tzinfo=UTC)
    submission_id = await direct_submission(
        db,
        world,
        jane,
        summary={"n_trials": 20, "mean_rt_ms": 312.25, "accuracy": 0.9},
        started_at=started,
    )
    response = await client.get(
        f"/api/redcap/connections/{connection_id}/preview",
        params={"submission_id": str(submission_id)},
        headers=world.headers,
    )
    assert response.status_code == 200, response.text
    preview = response.json()
    assert preview["records"] == [
        {
            "record_id": "P-JANE",
            "redcap_repeat_instrument": "cognitive_session",
            "redcap_repeat_instance": 1,
            # The participant's local date and time: 23:30 in Paris.
            "session_date": "2024-03-02",
            "session_started_at": "2024-03-02 23:30",
            "srt_mean_rt_ms": "312.25",
            "srt_n_trials": "20",
            "session_notes": world.battery.key,
        }
    ]
    assert preview["instance_assigned"] is False and preview["routed_here"] is True
    assert preview["status"] is None
    assert [c.content for c in classic.calls if c.content == "record"] == []

    # Through the ingest path too, and a second visit of the same participant is instance 2.
    first = await submit(client, db, settings, world, jane)
    second = await client.get(
        f"/api/redcap/connections/{connection_id}/preview",
        params={"submission_id": str(first)},
        headers=world.headers,
    )
    assert second.json()["records"][0]["redcap_repeat_instance"] == 1  # nothing assigned yet


async def test_preview_of_another_studys_submission_is_404(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
) -> None:
    connection_id = await connect_and_map(client, world, classic)
    elsewhere = await make_world(db, settings)
    someone = await participant(db, elsewhere, "P-ELSE")
    foreign = await direct_submission(db, elsewhere, someone, summary={"n_trials": 1})
    response = await client.get(
        f"/api/redcap/connections/{connection_id}/preview",
        params={"submission_id": str(foreign)},
        headers=world.headers,
    )
    assert response.status_code == 404
