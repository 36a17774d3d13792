"""The sync checks the project's shape before it sends: a project changed since its mapping was
saved fails the batch with a mapping error instead of writing where nobody meant (REDCap would
file a row without its event under the first event, and say nothing)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.redcap import shape
from server.redcap.models import SyncStatus
from server.redcap.sync import sync_submission
from tests.redcap_standin import (
    ProjectModel,
    RedcapStandin,
    classic_project,
    longitudinal_project,
)
from tests.test_redcap_support import (
    GOOD,
    World,
    create_connection,
    direct_submission,
    imports,
    make_world,
    participant,
    running,
    session_mapping,
    states,
)

MISFIT = "The field mapping no longer fits the REDCap project: "


@pytest.fixture
def classic() -> Iterator[RedcapStandin]:
    yield from running(classic_project())


@pytest.fixture
def longitudinal() -> Iterator[RedcapStandin]:
    yield from running(longitudinal_project())


@pytest.fixture
async def world(db: AsyncSession, settings: Settings) -> World:
    return await make_world(db, settings)


async def map_to(client: AsyncClient, world: World, standin: RedcapStandin, **mapping: Any) -> str:
    """A study-wide connection to the stand-in, its mapping saved; the connection's id."""
    connection = await create_connection(client, world, standin, batch_size=10)
    saved = await client.put(
        f"/api/redcap/connections/{connection['id']}/mapping",
        json=session_mapping(world, **mapping),
        headers=world.headers,
    )
    assert saved.status_code == 200, saved.text
    return str(connection["id"])


def no_longer_repeating() -> ProjectModel:
    project = classic_project()
    project.repeating = []
    return project


def without_month_6() -> ProjectModel:
    project = longitudinal_project()
    project.events = [e for e in project.events if e.unique_event_name != "month_6_arm_1"]
    project.form_event_mapping = [
        m for m in project.form_event_mapping if m.unique_event_name != "month_6_arm_1"
    ]
    project.repeating = [r for r in project.repeating if r.event_name != "month_6_arm_1"]
    return project


CHANGES = {
    # saved while classic; an admin has made the project longitudinal since
    "became_longitudinal": (
        "classic", {}, longitudinal_project,
        "event: a longitudinal project needs the unique event name",
    ),
    "instrument_no_longer_repeats": (
        "classic", {}, no_longer_repeating,
        "repeating_instrument: 'cognitive_session' is not a repeating instrument",
    ),
    "event_gone": (
        "longitudinal", {"event": "month_6_arm_1"}, without_month_6,
        "event: REDCap has no event 'month_6_arm_1'",
    ),
}  # fmt: skip


@pytest.mark.parametrize("change", sorted(CHANGES))
async def test_a_project_changed_since_the_mapping_fails_the_batch_unsent(
    change: str,
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    request: pytest.FixtureRequest,
) -> None:
    fixture, mapping, changed, mismatch = CHANGES[change]
    standin: RedcapStandin = request.getfixturevalue(fixture)
    connection_id = await map_to(client, world, standin, **mapping)
    standin.reshape(changed())
    ann = await participant(db, world, "P-ANN")
    ids = [await direct_submission(db, world, ann, summary=GOOD) for _ in range(2)]

    outcome = await sync_submission(db, settings, ids[0])
    await db.commit()
    assert (outcome.status, outcome.batch, outcome.failed, outcome.calls) == ("failed", 2, 2, 0)
    assert outcome.error is not None
    assert outcome.error.startswith(MISFIT) and mismatch in outcome.error
    assert imports(standin) == [] and standin.records == []
    failed = await states(db, *ids)
    assert {(s.status, s.error) for s in failed.values()} == {(SyncStatus.failed, outcome.error)}

    # What a coordinator sees: both failed, with the mismatch named.
    listed = await client.get(
        f"/api/redcap/connections/{connection_id}/sync-states",
        params={"status": "failed"},
        headers=world.headers,
    )
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert sorted(i["submission_id"] for i in items) == sorted(str(i) for i in ids)
    assert all(mismatch in i["error"] and i["error_field"] is None for i in items)


async def test_a_fitting_project_syncs_and_is_looked_at_once_per_connection(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
    longitudinal: RedcapStandin,
) -> None:
    await map_to(client, world, classic)
    site_b = await create_connection(client, world, longitudinal, site_id=str(world.site_b.id))
    saved = await client.put(
        f"/api/redcap/connections/{site_b['id']}/mapping",
        json=session_mapping(world, event="month_6_arm_1"),
        headers=world.headers,
    )
    assert saved.status_code == 200, saved.text
    classic.knobs.reset()
    longitudinal.knobs.reset()
    ann = await participant(db, world, "P-ANN")
    bea = await participant(db, world, "P-BEA", site=world.site_b)

    for who in (ann, ann, bea, bea):  # one batch each: every submission synced on its own
        submission_id = await direct_submission(db, world, who, summary=GOOD)
        assert (await sync_submission(db, settings, submission_id)).status == "synced"
    # The shape is fetched once per connection (no exportFieldNames: nobody to show hints to),
    # then each batch is one import.
    assert [c.content for c in classic.calls] == ["project", "metadata", "repeatingFormsEvents",
                                                  "record", "record"]  # fmt: skip
    assert [c.content for c in longitudinal.calls] == [
        "project", "metadata", "formEventMapping", "repeatingFormsEvents", "record", "record"
    ]  # fmt: skip
    assert {r["redcap_event_name"] for r in longitudinal.records} == {"month_6_arm_1"}


async def test_a_change_is_caught_once_the_kept_shape_is_stale_and_a_new_mapping_fits(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connection_id = await map_to(client, world, classic)
    ann = await participant(db, world, "P-ANN")
    first = await direct_submission(db, world, ann, summary=GOOD)
    assert (await sync_submission(db, settings, first)).status == "synced"

    # Made longitudinal while this process keeps the classic shape: once that is stale, the
    # next batch is checked against the project as it is.
    classic.reshape(longitudinal_project())
    monkeypatch.setattr(shape, "SHAPE_TTL_SECONDS", 0.0)
    second = await direct_submission(db, world, ann, summary=GOOD)
    outcome = await sync_submission(db, settings, second)
    assert outcome.status == "failed" and MISFIT in (outcome.error or "")
    assert len(imports(classic)) == 1
    await db.commit()

    # The mapping saved again for the longitudinal project, and the failed one resynced: it
    # goes to the event now chosen (the new mapping is checked afresh, whatever is kept).
    monkeypatch.setattr(shape, "SHAPE_TTL_SECONDS", 3600.0)
    saved = await client.put(
        f"/api/redcap/connections/{connection_id}/mapping",
        json=session_mapping(world, event="month_6_arm_1"),
        headers=world.headers,
    )
    assert saved.status_code == 200, saved.text
    resync = await client.post(
        f"/api/redcap/connections/{connection_id}/resync", json={}, headers=world.headers
    )
    assert resync.json()["submission_ids"] == [str(second)]
    assert (await sync_submission(db, settings, second)).status == "synced"
    # The classic visit moved into the first event with the project; the new one is where
    # the mapping now says.
    visits = [(r["redcap_event_name"], r["redcap_repeat_instance"])
              for r in classic.records if r["redcap_repeat_instrument"]]  # fmt: skip
    assert visits == [("baseline_arm_1", 1), ("month_6_arm_1", 1)]
    assert (await states(db, second))[second].event == "month_6_arm_1"
