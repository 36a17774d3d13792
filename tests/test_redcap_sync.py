"""sync_submission against the stand-in: batches, instances fixed before the call (a re-send
carries the same ones), REDCap's refusals per row, transient failures, the throttle, resync."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.redcap import importing
from server.redcap.errors import TransientRedcapError
from server.redcap.models import RedcapConnection, SyncStatus
from server.redcap.sync import sync_submission
from tests.redcap_standin import RedcapStandin, classic_project, longitudinal_project
from tests.test_redcap_support import (
    GOOD,
    OUT_OF_RANGE,
    World,
    connect_and_map,
    create_connection,
    direct_submission,
    imports,
    instances,
    make_world,
    participant,
    running,
    session_mapping,
    states,
    submit,
    sync_outbox_rows,
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


def ago(minutes: int) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)


async def test_pending_submissions_go_in_one_import_one_instance_each(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
) -> None:
    connection_id = await connect_and_map(client, world, classic)
    ann = await participant(db, world, "P-ANN")
    bob = await participant(db, world, "P-BOB")
    first = await submit(client, db, settings, world, ann, n_trials=20)
    second = await submit(client, db, settings, world, ann, n_trials=30)
    third = await submit(client, db, settings, world, bob, n_trials=25)
    classic.knobs.reset()  # the call log from here on

    outcome = await sync_submission(db, settings, first)
    await db.commit()
    assert (outcome.status, outcome.batch, outcome.synced, outcome.calls) == ("synced", 3, 3, 1)
    [call] = imports(classic)
    assert (call.rows, call.status) == (3, 200)
    stored = {
        (record, instance): row["srt_n_trials"] for record, instance, row in instances(classic)
    }
    assert stored == {("P-ANN", 1): "20", ("P-ANN", 2): "30", ("P-BOB", 1): "25"}

    synced = await states(db, first, second, third)
    assert {s.status for s in synced.values()} == {SyncStatus.synced}
    assert [(synced[i].record_id, synced[i].instrument, synced[i].instance)
            for i in (first, second, third)] == [
        ("P-ANN", "cognitive_session", 1), ("P-ANN", "cognitive_session", 2),
        ("P-BOB", "cognitive_session", 1),
    ]  # fmt: skip
    assert all(s.synced_at and s.attempts == 1 and s.connection_id == uuid.UUID(connection_id)
               for s in synced.values())  # fmt: skip

    # Each one's own task finds it done: no call at all (not even the project's shape check).
    calls = len(classic.calls)
    for submission_id in (second, third, first):
        again = await sync_submission(db, settings, submission_id)
        assert (again.status, again.calls) == ("synced", 0)
    assert len(imports(classic)) == 1
    assert len(classic.calls) == calls

    # A later visit is the record's next instance.
    fourth = await submit(client, db, settings, world, ann, n_trials=40)
    assert (await sync_submission(db, settings, fourth)).status == "synced"
    assert ("P-ANN", 3) in {(r, i) for r, i, _ in instances(classic)}


async def test_a_crash_after_redcap_took_the_rows_resends_the_same_instances(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await connect_and_map(client, world, classic)
    ann = await participant(db, world, "P-ANN")
    ids = [await direct_submission(db, world, ann, summary={**GOOD, "n_trials": n},
                                   received_at=ago(10 - n)) for n in (1, 2, 3)]  # fmt: skip
    await db.commit()  # the set-up is there whatever happens to the worker's transaction
    real_write = importing.write_results

    async def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("worker killed after REDCap accepted the import")

    monkeypatch.setattr(importing, "write_results", crash)
    with pytest.raises(RuntimeError, match="worker killed"):
        await sync_submission(db, settings, ids[0])
    await db.rollback()  # the caller's transaction is lost with the crash
    monkeypatch.setattr(importing, "write_results", real_write)
    assert len(imports(classic)) == 1
    assert sorted((r, i) for r, i, _ in instances(classic)) == [("P-ANN", 1), ("P-ANN", 2),
                                                                  ("P-ANN", 3)]  # fmt: skip
    # The batch was numbered and written before the call: instances fixed, states pending.
    numbered = await states(db, *ids)
    assert [numbered[i].instance for i in ids] == [1, 2, 3]
    assert {s.status for s in numbered.values()} == {SyncStatus.pending}

    # The dead sender's lock went with its connection: the next task sends the same batch
    # again at once, under the same instances: updates, nothing new.
    outcome = await sync_submission(db, settings, ids[1])
    assert (outcome.status, outcome.batch, outcome.synced) == ("synced", 3, 3)
    assert len(imports(classic)) == 2
    assert sorted((r, i) for r, i, _ in instances(classic)) == [("P-ANN", 1), ("P-ANN", 2),
                                                                  ("P-ANN", 3)]  # fmt: skip
    done = await states(db, *ids)
    assert [done[i].instance for i in ids] == [1, 2, 3]
    assert {s.status for s in done.values()} == {SyncStatus.synced}


async def test_an_answer_lost_after_redcap_stored_the_rows_is_no_duplicate(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
) -> None:
    await connect_and_map(client, world, classic)
    ann = await participant(db, world, "P-ANN")
    ids = [await direct_submission(db, world, ann, summary=GOOD, received_at=ago(5 - n))
           for n in range(2)]  # fmt: skip
    await db.commit()
    # The import's answer lost (the project's shape check before it goes through).
    classic.fail(502, times=1, after_processing=True, content="record")
    with pytest.raises(TransientRedcapError, match="502"):
        await sync_submission(db, settings, ids[0])
    assert len(instances(classic)) == 2  # REDCap stored them; we never heard
    waiting = await states(db, *ids)
    assert {s.status for s in waiting.values()} == {SyncStatus.pending}
    assert all(s.attempts == 1 and "502" in (s.error or "") for s in waiting.values())
    assert (await sync_submission(db, settings, ids[1])).status == "synced"
    assert sorted((r, i) for r, i, _ in instances(classic)) == [("P-ANN", 1), ("P-ANN", 2)]


async def test_a_value_redcap_refuses_fails_that_submission_only(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
) -> None:
    connection_id = await connect_and_map(client, world, classic)
    ann = await participant(db, world, "P-ANN")
    bob = await participant(db, world, "P-BOB")
    good_ann = await direct_submission(db, world, ann, summary=GOOD, received_at=ago(3))
    # n_trials 0: srt_n_trials has @FORCE-MINMAX with a minimum of 1.
    bad_ann = await direct_submission(db, world, ann, summary={**GOOD, "n_trials": 0},
                                      received_at=ago(2))  # fmt: skip
    good_bob = await direct_submission(db, world, bob, summary=GOOD, received_at=ago(1))

    outcome = await sync_submission(db, settings, good_bob)
    await db.commit()
    assert (outcome.status, outcome.synced, outcome.failed, outcome.calls) == ("synced", 2, 1, 2)
    first, second = imports(classic)
    assert (first.status, first.rows, second.status, second.rows) == (400, 0, 200, 2)
    assert OUT_OF_RANGE in (first.error or "")
    result = await states(db, good_ann, bad_ann, good_bob)
    failed = result[bad_ann]
    assert (failed.status, failed.error, failed.error_field) == (
        SyncStatus.failed, OUT_OF_RANGE, "srt_n_trials"
    )  # fmt: skip
    assert result[good_ann].status == result[good_bob].status == SyncStatus.synced
    # The failed one keeps its instance (2), so a resync fills the same one.
    assert failed.instance == 2
    assert sorted((r, i) for r, i, _ in instances(classic)) == [("P-ANN", 1), ("P-BOB", 1)]

    listed = await client.get(
        f"/api/redcap/connections/{connection_id}/sync-states",
        params={"status": "failed"},
        headers=world.headers,
    )
    assert listed.status_code == 200
    [item] = listed.json()["items"]
    assert item["submission_id"] == str(bad_ann)
    assert (item["status"], item["error"], item["error_field"], item["attempts"]) == (
        "failed", OUT_OF_RANGE, "srt_n_trials", 1
    )  # fmt: skip
    assert item["last_attempt_at"]
    # Failed stays failed for its own task: no call until someone resyncs it.
    assert (await sync_submission(db, settings, bad_ann)).calls == 0


async def test_resync_resets_failed_states_and_queues_them(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
) -> None:
    connection_id = await connect_and_map(client, world, classic)
    ann = await participant(db, world, "P-ANN")
    bad = await direct_submission(db, world, ann, summary={**GOOD, "n_trials": 0})
    assert (await sync_submission(db, settings, bad)).status == "failed"
    await db.commit()
    before = len(await sync_outbox_rows(db, bad))

    synced_one = await direct_submission(db, world, ann, summary=GOOD)
    assert (await sync_submission(db, settings, synced_one)).status == "synced"
    await db.commit()
    not_failed = await client.post(
        f"/api/redcap/connections/{connection_id}/resync",
        json={"submission_id": str(synced_one)},
        headers=world.headers,
    )
    assert not_failed.status_code == 409

    reset = await client.post(
        f"/api/redcap/connections/{connection_id}/resync", json={}, headers=world.headers
    )
    assert reset.status_code == 200, reset.text
    assert reset.json() == {"reset": 1, "submission_ids": [str(bad)]}
    state = (await states(db, bad))[bad]
    assert (state.status, state.error, state.error_field) == (SyncStatus.pending, None, None)
    rows = await sync_outbox_rows(db, bad)
    assert len(rows) == before + 1
    assert rows[-1].payload == {"submission_id": str(bad)} and rows[-1].finished_at is None

    # Fixed in REDCap (the minimum dropped), the queued resync goes through, same instance.
    classic.project.fields_by_name["srt_n_trials"]["text_validation_min"] = ""
    outcome = await sync_submission(db, settings, bad)
    assert (outcome.status, outcome.calls) == ("synced", 1)
    assert sorted((r, i) for r, i, _ in instances(classic)) == [("P-ANN", 1), ("P-ANN", 2)]
    assert (await states(db, bad))[bad].instance == 1


async def test_redcap_down_or_failing_keeps_the_states_pending(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
) -> None:
    await connect_and_map(client, world, classic)
    ann = await participant(db, world, "P-ANN")
    ids = [await direct_submission(db, world, ann, summary=GOOD, received_at=ago(5 - n))
           for n in range(2)]  # fmt: skip
    await db.commit()
    classic.fail(503)
    with pytest.raises(TransientRedcapError, match="503"):
        await sync_submission(db, settings, ids[0])
    await db.rollback()  # what the worker does with its own transaction on an error
    waiting = await states(db, *ids)
    assert {s.status for s in waiting.values()} == {SyncStatus.pending}
    assert all(s.attempts == 1 and s.last_attempt_at for s in waiting.values())
    await db.commit()  # the next call's writes are then no savepoint inside this read's
    classic.clear_failure()
    classic.stop()
    with pytest.raises(TransientRedcapError, match="could not be reached"):
        await sync_submission(db, settings, ids[1])
    await db.rollback()
    assert {s.attempts for s in (await states(db, *ids)).values()} == {2}
    assert classic.records == []
    classic.start()
    outcome = await sync_submission(db, settings, ids[1])
    assert (outcome.status, outcome.synced) == ("synced", 2)
    assert len(instances(classic)) == 2


async def test_consecutive_batches_wait_for_the_throttle(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
) -> None:
    # 60 calls a minute over one-second windows: one call per second to this server.
    await connect_and_map(client, world, classic, max_calls_per_minute=60, batch_size=1)
    throttled = settings.model_copy(update={"REDCAP_THROTTLE_WINDOW_SECONDS": 1})
    ann = await participant(db, world, "P-ANN")
    ids = [await direct_submission(db, world, ann, summary=GOOD, received_at=ago(5 - n))
           for n in range(3)]  # fmt: skip
    for submission_id in ids:
        outcome = await sync_submission(db, throttled, submission_id)
        assert (outcome.status, outcome.batch) == ("synced", 1)
    started = [c.started_at for c in imports(classic)]
    assert len(started) == 3
    gaps = [b - a for a, b in itertools.pairwise(started)]
    assert all(gap >= 0.9 for gap in gaps), gaps


async def test_no_connection_disabled_or_no_mapping_is_skipped(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
) -> None:
    ann = await participant(db, world, "P-ANN")
    first = await direct_submission(db, world, ann, summary=GOOD)
    outcome = await sync_submission(db, settings, first)
    assert outcome.status == "skipped" and "No REDCap connection" in (outcome.error or "")
    connection = await create_connection(client, world, classic)
    second = await direct_submission(db, world, ann, summary=GOOD)
    assert "no field mapping" in ((await sync_submission(db, settings, second)).error or "")
    skipped = await states(db, first, second)
    assert {s.status for s in skipped.values()} == {SyncStatus.skipped}
    assert classic.calls == [] or all(c.content != "record" for c in classic.calls)
    # Mapped now: a skipped submission is sent when its task runs again.
    mapped = await client.put(f"/api/redcap/connections/{connection['id']}/mapping",
                              json=session_mapping(world), headers=world.headers)  # fmt: skip
    assert mapped.status_code == 200
    assert (await sync_submission(db, settings, second)).status == "synced"
    row = await db.get(RedcapConnection, uuid.UUID(connection["id"]))
    assert row is not None
    row.enabled = False
    await db.flush()
    third = await direct_submission(db, world, ann, summary=GOOD)
    assert "disabled" in ((await sync_submission(db, settings, third)).error or "")


async def test_a_sites_own_connection_takes_its_participants(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
    longitudinal: RedcapStandin,
) -> None:
    study_wide = await connect_and_map(client, world, classic)
    site_b = await create_connection(client, world, longitudinal, site_id=str(world.site_b.id))
    mapped = await client.put(
        f"/api/redcap/connections/{site_b['id']}/mapping",
        json=session_mapping(world, event="month_6_arm_1"),
        headers=world.headers,
    )
    assert mapped.status_code == 200, mapped.text
    ann = await participant(db, world, "P-ANN")  # site A: the study-wide project
    bea = await participant(db, world, "P-BEA", site=world.site_b)
    for_a = await direct_submission(db, world, ann, summary=GOOD, received_at=ago(2))
    for_b = await direct_submission(db, world, bea, summary=GOOD, received_at=ago(1))
    outcome_a = await sync_submission(db, settings, for_a)
    assert (outcome_a.connection_id, outcome_a.batch) == (uuid.UUID(study_wide), 1)
    outcome_b = await sync_submission(db, settings, for_b)
    assert outcome_b.connection_id == uuid.UUID(site_b["id"])
    assert [r for r, _, _ in instances(classic)] == ["P-ANN"]
    [(record, instance, row)] = instances(longitudinal)
    assert (record, instance, row["redcap_event_name"]) == ("P-BEA", 1, "month_6_arm_1")


async def test_a_submission_with_nothing_mapped_is_skipped_not_sent(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
) -> None:
    connection = await create_connection(client, world, classic)
    only_metrics = session_mapping(world)
    only_metrics["fields"] = only_metrics["fields"][2:4]
    mapped = await client.put(f"/api/redcap/connections/{connection['id']}/mapping",
                              json=only_metrics, headers=world.headers)  # fmt: skip
    assert mapped.status_code == 200
    ann = await participant(db, world, "P-ANN")
    empty = await direct_submission(db, world, ann, summary={"mean_rt_ms": None})
    outcome = await sync_submission(db, settings, empty)
    assert outcome.status == "skipped" and "Nothing to send" in (outcome.error or "")
    assert imports(classic) == []

    # In a batch with others, it takes no instance: theirs follow on without a gap.
    before, between, after = [
        await direct_submission(db, world, ann, summary=s, received_at=ago(3 - n))
        for n, s in enumerate([GOOD, {"mean_rt_ms": None}, GOOD])
    ]
    outcome = await sync_submission(db, settings, before)
    assert (outcome.status, outcome.batch, outcome.synced) == ("synced", 2, 2)
    done = await states(db, before, between, after)
    assert [(done[i].status, done[i].instance) for i in (before, between, after)] == [
        (SyncStatus.synced, 1),
        (SyncStatus.skipped, None),
        (SyncStatus.synced, 2),
    ]
    assert sorted((r, i) for r, i, _ in instances(classic)) == [("P-ANN", 1), ("P-ANN", 2)]
