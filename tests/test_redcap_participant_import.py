"""Participants from REDCap records, as a job: a report per record, a dry run, all or nothing.

Through HTTP (POST answers 202 with the import's id) and the worker's own path
(workers.protocol.process with the task's handler, on the test's transaction)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from httpx import AsyncClient
from redcap.project import Project
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.config import Settings
from server.outbox import service as outbox
from server.outbox.models import JobStatus, OutboxEvent
from server.participants.models import Participant
from tests.redcap_standin import RedcapStandin, classic_project
from tests.test_redcap_support import World, create_connection, make_world, participant, running
from workers.protocol import process
from workers.tasks.redcap import _import, import_participants


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


async def run_import_jobs(db: AsyncSession, settings: Settings) -> list[str]:
    """Run the queued import jobs as a worker does (workers.protocol); their outcomes."""
    sessions = async_sessionmaker(
        bind=db.bind, expire_on_commit=False, join_transaction_mode="create_savepoint"
    )
    ids = (
        await db.scalars(
            select(OutboxEvent.id).where(
                OutboxEvent.topic == outbox.REDCAP_IMPORT_PARTICIPANTS,
                OutboxEvent.finished_at.is_(None),
            )
        )
    ).all()
    return [
        await process(
            sessions, settings, event_id=i, task_name=import_participants.name, handler=_import
        )
        for i in ids
    ]


async def import_job(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    connection_id: str,
    **body: Any,
) -> Any:
    """POST the import (202), run its job, and GET it: the import as its reader sees it."""
    queued = await client.post(
        f"/api/redcap/connections/{connection_id}/participant-import",
        json={"form": "enrollment", "site_source": "dag",
              "dag_to_site": {"site_a": "A", "site_b": "B"}, **body},
        headers=world.headers,
    )  # fmt: skip
    if queued.status_code != 202:
        return queued
    assert queued.json()["status"] == "queued" and queued.json()["report"] is None
    await run_import_jobs(db, settings)
    return await client.get(
        f"/api/redcap/connections/{connection_id}/participant-imports/{queued.json()['id']}",
        headers=world.headers,
    )


async def test_dry_run_reports_each_record_and_writes_nothing(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
) -> None:
    connection = await create_connection(client, world, classic)
    await participant(db, world, "1003", site=world.site_a)
    # A record that never had the enrolment form filled in is not a candidate.
    Project(classic.url, classic.token).import_records(
        [{"record_id": "2001", "redcap_repeat_instrument": "cognitive_session",
          "redcap_repeat_instance": 1, "srt_n_trials": "5"}]
    )  # fmt: skip
    response = await import_job(client, db, settings, world, connection["id"], dry_run=True)
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["dry_run"]) == ("succeeded", True)
    report = response.json()["report"]
    assert (report["dry_run"], report["total_records"], report["new"]) == (True, 3, 2)
    assert (report["already_enrolled"], report["rejected"], report["created"]) == (1, 0, 0)
    assert [(r["record_id"], r["site_code"], r["status"]) for r in report["records"]] == [
        ("1001", "A", "new"), ("1002", "B", "new"), ("1003", "A", "already_enrolled")
    ]  # fmt: skip
    assert await _count(db, world) == 1
    exports = [c for c in classic.calls if c.content == "record" and c.action == "export"]
    assert len(exports) == 2  # the record ids, then one chunk of the form

    real = await import_job(client, db, settings, world, connection["id"])
    assert real.status_code == 200
    assert (real.json()["status"], real.json()["report"]["created"]) == ("succeeded", 2)
    codes = (
        await db.execute(
            select(Participant.participant_code, Participant.site_id)
            .where(Participant.study_id == world.study.id)
            .order_by(Participant.participant_code)
        )
    ).all()
    assert codes == [("1001", world.site_a.id), ("1002", world.site_b.id),
                     ("1003", world.site_a.id)]  # fmt: skip


async def test_one_rejected_record_imports_nothing_and_the_job_fails(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
) -> None:
    connection = await create_connection(client, world, classic)
    response = await import_job(
        client, db, settings, world, connection["id"], dag_to_site={"site_a": "A"}
    )
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "failed"
    assert job["error"] == "1 of 3 records were rejected; nothing was imported."
    report = job["report"]
    assert (report["new"], report["rejected"], report["created"]) == (2, 1, 0)
    [rejected] = [r for r in report["records"] if r["status"] == "rejected"]
    assert rejected["record_id"] == "1002"
    assert rejected["reason"] == "data access group 'site_b' is not mapped to a site"
    assert await _count(db, world) == 0


async def test_fixed_site_and_another_code_field(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
) -> None:
    connection = await create_connection(client, world, classic)
    response = await import_job(
        client,
        db,
        settings,
        world,
        connection["id"],
        site_source="fixed",
        site_id=str(world.site_b.id),
        participant_code_field="enrol_date",
        dry_run=True,
    )
    assert response.status_code == 200, response.text
    assert [(r["participant_code"], r["site_code"])
            for r in response.json()["report"]["records"]] == [
        ("2024-01-10", "B"), ("2024-01-11", "B"), ("2024-01-12", "B")
    ]  # fmt: skip
    # Sites are the study's: refused by the request, before anything is queued.
    for body, loc in [
        ({"site_source": "fixed"}, ["body", "site_id"]),
        ({"dag_to_site": {"site_a": "ZZ"}}, ["body", "dag_to_site", "site_a"]),
    ]:
        refused = await import_job(client, db, settings, world, connection["id"], **body)
        assert refused.status_code == 422, body
        assert refused.json()["details"][0]["loc"] == loc
    # The form and its fields are REDCap's: the job fails, and says what did not fit.
    for body, loc in [
        ({"form": "demographics"}, ["body", "form"]),
        ({"participant_code_field": "nope"}, ["body", "participant_code_field"]),
    ]:
        failed = await import_job(client, db, settings, world, connection["id"], **body)
        assert failed.json()["status"] == "failed", body
        assert failed.json()["problem"][0]["loc"] == loc
        assert failed.json()["report"] is None


async def test_a_redelivered_import_runs_once(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
) -> None:
    connection = await create_connection(client, world, classic)
    done = await import_job(client, db, settings, world, connection["id"])
    assert done.json()["report"]["created"] == 3
    calls = len(classic.calls)
    # The message again (the relay re-published it, say), and the service called again:
    # the import has its report, so nothing is asked of REDCap and nothing is written.
    job = await db.get(OutboxEvent, uuid.UUID(done.json()["job_id"]), populate_existing=True)
    assert job is not None
    job.finished_at = None
    job.status = JobStatus.queued
    await db.flush()
    assert await run_import_jobs(db, settings) == ["succeeded"]
    assert len(classic.calls) == calls
    assert await _count(db, world) == 3
