"""A REDCap push: a filtered set of sessions sent again through the current mapping, as one
job, against the stand-in: only the chosen sessions (never quarantined or consent-excluded
ones), the same instances updated, REDCap's refusals per record, progress and counts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.consent.models import ConsentWithdrawal, DataUse
from server.core.config import Settings
from server.exports import redcap_push
from server.outbox import service as outbox
from server.outbox.models import OutboxEvent
from server.participants.models import Participant, ParticipantStatus
from server.redcap.batch import own_transaction
from server.redcap.sync import sync_submission
from server.submissions.models import Submission, SubmissionStatus
from tests.redcap_standin import RedcapStandin, classic_project
from tests.test_redcap_support import (
    GOOD,
    OUT_OF_RANGE,
    World,
    connect_and_map,
    direct_submission,
    imports,
    instances,
    make_world,
    participant,
    running,
    session_mapping,
)
from workers.protocol import locked
from workers.tasks.exports import _claim_and_push, push_to_redcap

PUSHES = "/api/exports/redcap-pushes"


@pytest.fixture
def classic() -> Iterator[RedcapStandin]:
    yield from running(classic_project())


@pytest.fixture
async def world(db: AsyncSession, settings: Settings) -> World:
    return await make_world(db, settings)


def ago(minutes: int) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)


async def run_push_job(db: AsyncSession, settings: Settings, job_id: str) -> str:
    """The push's job as a worker runs it (its door, under the row's run lock), with every
    commit a savepoint of the test's transaction."""
    sessions = async_sessionmaker(
        bind=db.bind, expire_on_commit=False, join_transaction_mode="create_savepoint"
    )
    return await locked(
        sessions, settings, event_id=uuid.UUID(job_id), task_name=push_to_redcap.name,
        door=_claim_and_push,
    )  # fmt: skip


async def push(client: AsyncClient, world: World, headers: dict[str, str] | None = None,
               **filters: Any) -> Any:  # fmt: skip
    response = await client.post(
        PUSHES,
        params={"study_id": str(world.study.id)},
        json=filters,
        headers=headers or world.headers,
    )
    return response


async def remap(client: AsyncClient, world: World, connection_id: str, **changes: Any) -> None:
    response = await client.put(
        f"/api/redcap/connections/{connection_id}/mapping",
        json=session_mapping(world, **changes),
        headers=world.headers,
    )
    assert response.status_code == 200, response.text


async def withdraw(db: AsyncSession, who: Participant) -> None:
    db.add(ConsentWithdrawal(participant_id=who.id, study_id=who.study_id, reason="test",
                             data_use=DataUse.none, previous_status=str(who.status)))  # fmt: skip
    who.status = ParticipantStatus.withdrawn
    await db.flush()


async def quarantined(db: AsyncSession, world: World, who: Participant) -> uuid.UUID:
    """A submission held back (its sync row finished, as quarantine leaves it)."""
    held = await direct_submission(db, world, who, summary=GOOD, received_at=ago(1))
    await db.execute(update(Submission).where(Submission.id == held)
                     .values(status=SubmissionStatus.quarantined))  # fmt: skip
    await outbox.settle(db, outbox.REDCAP_SYNC_SUBMISSION, [held], now=datetime.now(UTC))
    return held


async def test_a_filtered_push_after_a_mapping_change_updates_the_same_instances(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
) -> None:
    connection_id = await connect_and_map(client, world, classic)
    ann = await participant(db, world, "P-ANN")
    cat = await participant(db, world, "P-CAT")
    bob = await participant(db, world, "P-BOB", site=world.site_b)
    firsts = [
        await direct_submission(db, world, who, summary=GOOD, received_at=ago(minutes))
        for who, minutes in ((ann, 50), (ann, 40), (cat, 30), (bob, 20))
    ]
    assert (await sync_submission(db, settings, firsts[0])).synced == 4
    notes = {(r, i): row["session_notes"] for r, i, row in instances(classic)}
    assert set(notes.values()) == {world.battery.key}
    await withdraw(db, cat)
    held = await quarantined(db, world, ann)
    # The mapping changed: the notes are the device now.
    await remap(client, world, connection_id, fields=[
        {"source": "session.device", "field": "session_notes"},
        {"source": f"module.{world.srt}.n_trials", "field": "srt_n_trials"},
    ])  # fmt: skip
    classic.knobs.reset()

    asked = await push(client, world, site_ids=[str(world.site_a.id)])
    assert asked.status_code == 202, asked.text
    queued = asked.json()
    assert (queued["status"], queued["total"], queued["settled"]) == ("queued", None, 0)
    assert queued["filters"]["site_ids"] == [str(world.site_a.id)]

    assert await run_push_job(db, settings, queued["job_id"]) == "succeeded"

    # Ann's two sessions only (not the quarantined one, not Cat's, not Bob's at site B), as
    # updates of the instances they had: nothing new in REDCap.
    [call] = imports(classic)
    assert (call.rows, call.status) == (2, 200)
    stored = {(r, i): row["session_notes"] for r, i, row in instances(classic)}
    assert set(stored) == set(notes)
    assert stored == {("P-ANN", 1): "Pixel 8", ("P-ANN", 2): "Pixel 8",
                      ("P-CAT", 1): world.battery.key, ("P-BOB", 1): world.battery.key}  # fmt: skip

    done = (await client.get(f"{PUSHES}/{queued['id']}", headers=world.headers)).json()
    assert (done["status"], done["total"], done["settled"]) == ("succeeded", 2, 2)
    assert done["counts"] == {"pending": 0, "synced": 2, "failed": 0, "skipped": 0}
    assert done["excluded"] == {"withdrawn: no data may be used": 1}
    assert done["finished_at"] is not None
    page = (await client.get(f"{PUSHES}/{queued['id']}/records", headers=world.headers)).json()
    assert sorted((r["record_id"], r["instrument"], r["instance"], r["status"])
                  for r in page["items"]) == [
        ("P-ANN", "cognitive_session", 1, "synced"), ("P-ANN", "cognitive_session", 2, "synced"),
    ]  # fmt: skip
    assert {r["submission_id"] for r in page["items"]} == {str(i) for i in firsts[:2]}
    assert str(held) not in {r["submission_id"] for r in page["items"]}
    assert page["next_cursor"] is None

    # A second message for the same job: nothing runs, nothing is sent.
    assert await run_push_job(db, settings, queued["job_id"]) == "skipped"
    assert len(imports(classic)) == 1


async def test_a_record_redcap_refuses_fails_alone_with_redcaps_message(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
) -> None:
    # First synced without the trial count; the new mapping sends it, and one session has 0
    # (srt_n_trials has a minimum of 1 in the project).
    connection_id = await connect_and_map(client, world, classic)
    await remap(client, world, connection_id,
                fields=[{"source": "session.visit", "field": "session_notes"}])  # fmt: skip
    ann = await participant(db, world, "P-ANN")
    ids = [
        await direct_submission(db, world, ann, summary={**GOOD, "n_trials": n},
                                received_at=ago(10 - position))
        for position, n in enumerate((3, 0, 5))
    ]  # fmt: skip
    assert (await sync_submission(db, settings, ids[0])).synced == 3
    await remap(client, world, connection_id)
    classic.knobs.reset()

    asked = await push(client, world)
    assert asked.status_code == 202, asked.text
    assert await run_push_job(db, settings, asked.json()["job_id"]) == "succeeded"

    done = (await client.get(f"{PUSHES}/{asked.json()['id']}", headers=world.headers)).json()
    assert (done["total"], done["settled"]) == (3, 3)
    assert done["counts"] == {"pending": 0, "synced": 2, "failed": 1, "skipped": 0}
    records = f"{PUSHES}/{asked.json()['id']}/records"
    failed = (await client.get(records, params={"status": "failed"}, headers=world.headers)).json()
    [record] = failed["items"]
    assert (record["submission_id"], record["instance"]) == (str(ids[1]), 2)
    assert (record["error"], record["error_field"]) == (OUT_OF_RANGE, "srt_n_trials")
    stored = {(r, i): row.get("srt_n_trials") or None for r, i, row in instances(classic)}
    assert stored == {("P-ANN", 1): "3", ("P-ANN", 2): None, ("P-ANN", 3): "5"}

    # Mended later by a resync under a mapping without the count: the sync's state moves on,
    # the push's results stay what the push got.
    await remap(client, world, connection_id,
                fields=[{"source": "session.visit", "field": "session_notes"}])  # fmt: skip
    resync = await client.post(
        f"/api/redcap/connections/{connection_id}/resync",
        json={"submission_id": str(ids[1])},
        headers=world.headers,
    )
    assert resync.status_code == 200, resync.text
    assert (await sync_submission(db, settings, ids[1])).status == "synced"
    again = (await client.get(f"{PUSHES}/{asked.json()['id']}", headers=world.headers)).json()
    assert again["counts"] == done["counts"]
    failed = (await client.get(records, params={"status": "failed"}, headers=world.headers)).json()
    assert [(r["submission_id"], r["error"]) for r in failed["items"]] == [
        (str(ids[1]), OUT_OF_RANGE)
    ]


async def test_a_push_never_synced_before_and_one_cut_short_go_on_where_they_were(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
) -> None:
    """Sessions with no sync state yet are sent as first syncs; a job whose worker died after
    choosing its set goes on with that set (chosen and reset once), and what the ordinary sync
    sent meanwhile is not sent again."""
    await connect_and_map(client, world, classic)
    ann = await participant(db, world, "P-ANN")
    ids = [await direct_submission(db, world, ann, summary=GOOD, received_at=ago(9 - n))
           for n in range(3)]  # fmt: skip
    asked = (await push(client, world)).json()
    push_id = uuid.UUID(asked["id"])
    async with own_transaction(db) as session:
        chosen = await redcap_push.choose(session, push_id)
    assert chosen.total == 3
    # The ordinary sync's task runs first: the connection's one sender sends all three.
    assert (await sync_submission(db, settings, ids[2])).synced == 3
    extra = await direct_submission(db, world, ann, summary=GOOD, received_at=ago(1))
    # The worker died after step 1; the job runs again: no second choice, nothing sent twice.
    assert await run_push_job(db, settings, asked["job_id"]) == "succeeded"
    assert len(imports(classic)) == 1
    assert sorted((r, i) for r, i, _ in instances(classic)) == [("P-ANN", n) for n in (1, 2, 3)]
    done = (await client.get(f"{PUSHES}/{push_id}", headers=world.headers)).json()
    assert (done["total"], done["settled"], done["counts"]["synced"]) == (3, 3, 3)
    job = await db.get(OutboxEvent, uuid.UUID(asked["job_id"]), populate_existing=True)
    assert job is not None and job.attempts == 1
    assert extra not in {uuid.UUID(r["submission_id"]) for r in (await client.get(
        f"{PUSHES}/{push_id}/records", headers=world.headers)).json()["items"]}  # fmt: skip


async def test_a_push_out_of_time_is_resumed_without_spending_an_attempt(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
) -> None:
    await connect_and_map(client, world, classic)
    ann = await participant(db, world, "P-ANN")
    await direct_submission(db, world, ann, summary=GOOD)
    asked = (await push(client, world)).json()
    out_of_time = settings.model_copy(update={"OUTBOX_LEASE_SECONDS": 0})
    assert await run_push_job(db, out_of_time, asked["job_id"]) == "continuing"
    job = await db.get(OutboxEvent, uuid.UUID(asked["job_id"]), populate_existing=True)
    assert job is not None and (str(job.status), job.attempts) == ("retrying", 0)
    assert imports(classic) == []
    between = (await client.get(f"{PUSHES}/{asked['id']}", headers=world.headers)).json()
    assert (between["status"], between["total"], between["settled"]) == ("running", 1, 0)
    assert between["counts"]["pending"] == 1 and between["job_error"] is None
    assert await run_push_job(db, settings, asked["job_id"]) == "succeeded"
    assert [(r, i) for r, i, _ in instances(classic)] == [("P-ANN", 1)]
