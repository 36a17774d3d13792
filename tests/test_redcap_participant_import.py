"""Participants from REDCap records: a report per record, a dry run, all or nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from httpx import AsyncClient
from redcap.project import Project
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.participants.models import Participant
from tests.redcap_standin import RedcapStandin, classic_project
from tests.test_redcap_support import World, create_connection, make_world, participant, running


@pytest.fixture
def classic() -> Iterator[RedcapStandin]:
    project = classic_project()
    project.records = [
        {"record_id": record, "enrol_date": date, "enrollment_complete": "2",
         "redcap_data_access_group": dag}
        for record, date, dag in [("1001", "2024-01-10", "site_a"),
                                  ("1002", "2024-01-11", "site_b"),
                                  ("1003", "2024-01-12", "site_a")]
    ]  # fmt: skip
    yield from running(project)


@pytest.fixture
async def world(db: AsyncSession, settings: Settings) -> World:
    return await make_world(db, settings)


async def _count(db: AsyncSession, world: World) -> int:
    return int(
        await db.scalar(
            select(func.count())
            .select_from(Participant)
            .where(Participant.study_id == world.study.id)
        )
        or 0
    )


async def _import(client: AsyncClient, world: World, connection_id: str, **body: Any) -> Any:
    return await client.post(
        f"/api/redcap/connections/{connection_id}/participant-import",
        json={"form": "enrollment", "site_source": "dag",
              "dag_to_site": {"site_a": "A", "site_b": "B"}, **body},
        headers=world.headers,
    )  # fmt: skip


async def test_dry_run_reports_each_record_and_writes_nothing(
    client: AsyncClient, db: AsyncSession, world: World, classic: RedcapStandin
) -> None:
    connection = await create_connection(client, world, classic)
    await participant(db, world, "1003", site=world.site_a)
    # A record that never had the enrolment form filled in is not a candidate.
    Project(classic.url, classic.token).import_records(
        [{"record_id": "2001", "redcap_repeat_instrument": "cognitive_session",
          "redcap_repeat_instance": 1, "srt_n_trials": "5"}]
    )  # fmt: skip
    response = await _import(client, world, connection["id"], dry_run=True)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["dry_run"], report["total_records"], report["new"]) == (True, 3, 2)
    assert (report["already_enrolled"], report["rejected"], report["created"]) == (1, 0, 0)
    assert [(r["record_id"], r["site_code"], r["status"]) for r in report["records"]] == [
        ("1001", "A", "new"), ("1002", "B", "new"), ("1003", "A", "already_enrolled")
    ]  # fmt: skip
    assert await _count(db, world) == 1
    exports = [c for c in classic.calls if c.content == "record" and c.action == "export"]
    assert len(exports) == 2  # the record ids, then one chunk of the form

    real = await _import(client, world, connection["id"])
    assert real.status_code == 200
    assert real.json()["created"] == 2
    codes = (
        await db.execute(
            select(Participant.participant_code, Participant.site_id)
            .where(Participant.study_id == world.study.id)
            .order_by(Participant.participant_code)
        )
    ).all()
    assert codes == [("1001", world.site_a.id), ("1002", world.site_b.id),
                     ("1003", world.site_a.id)]  # fmt: skip


async def test_one_rejected_record_imports_nothing(
    client: AsyncClient, db: AsyncSession, world: World, classic: RedcapStandin
) -> None:
    connection = await create_connection(client, world, classic)
    response = await _import(client, world, connection["id"], dag_to_site={"site_a": "A"})
    assert response.status_code == 422
    envelope = response.json()
    assert envelope["error_code"] == "import_rejected"
    report = envelope["details"]
    assert (report["new"], report["rejected"], report["created"]) == (2, 1, 0)
    [rejected] = [r for r in report["records"] if r["status"] == "rejected"]
    assert rejected["record_id"] == "1002"
    assert rejected["reason"] == "data access group 'site_b' is not mapped to a site"
    assert await _count(db, world) == 0


async def test_fixed_site_and_another_code_field(
    client: AsyncClient, db: AsyncSession, world: World, classic: RedcapStandin
) -> None:
    connection = await create_connection(client, world, classic)
    response = await _import(
        client,
        world,
        connection["id"],
        site_source="fixed",
        site_id=str(world.site_b.id),
        participant_code_field="enrol_date",
        dry_run=True,
    )
    assert response.status_code == 200, response.text
    assert [(r["participant_code"], r["site_code"]) for r in response.json()["records"]] == [
        ("2024-01-10", "B"), ("2024-01-11", "B"), ("2024-01-12", "B")
    ]  # fmt: skip
    for body, loc in [
        ({"form": "demographics"}, ["body", "form"]),
        ({"participant_code_field": "nope"}, ["body", "participant_code_field"]),
        ({"site_source": "fixed"}, ["body", "site_id"]),
        ({"dag_to_site": {"site_a": "ZZ"}}, ["body", "dag_to_site", "site_a"]),
    ]:
        refused = await _import(client, world, connection["id"], **body)
        assert refused.status_code == 422, body
        assert refused.json()["details"][0]["loc"] == loc
