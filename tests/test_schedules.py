"""Visit schedules under a controllable clock (server.core.clock): no sleeps anywhere."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit.models import AuditEntry
from server.core.clock import clock
from server.core.config import Settings
from server.participants.models import Participant
from server.schedules import service, sweep
from server.schedules.models import AppliesTo, Repeat, VisitOccurrence, VisitStatus
from server.schedules.windows import VisitRule, windows
from server.studies.models import StudyRole
from tests import factories
from tests import ingest_factories as ingest
from tests import schedule_factories as sched


@pytest.fixture
def frozen() -> Iterator[None]:
    yield
    clock.reset()


async def _study(db: AsyncSession):  # type: ignore[no-untyped-def]
    study = await factories.create_study(db)
    site = await factories.create_site(db, study)
    battery = await ingest.create_battery(db, study, await ingest.standard_modules(db))
    return study, site, battery


async def _enrol(db: AsyncSession, site, tz: str, enrolled_at: datetime) -> Participant:  # type: ignore[no-untyped-def]
    participant = await factories.create_participant(db, site)
    participant.timezone, participant.enrolled_at = tz, enrolled_at
    await db.flush()
    return participant


async def _rows(db: AsyncSession, participant: Participant) -> list[VisitOccurrence]:
    return list(
        (
            await db.scalars(
                select(VisitOccurrence)
                .where(VisitOccurrence.participant_id == participant.id)
                .order_by(VisitOccurrence.window_start)
                .execution_options(populate_existing=True)
            )
        ).all()
    )


@pytest.mark.parametrize(
    ("tz", "winter_utc_hour", "summer_utc_hour"),
    [("Europe/Berlin", 8, 7), ("America/New_York", 14, 13)],
)
async def test_weekly_visits_stay_at_nine_local_across_both_dst_changes(
    db: AsyncSession, frozen: None, tz: str, winter_utc_hour: int, summer_utc_hour: int
) -> None:
    study, site, battery = await _study(db)
    weekly = [{"key": "weekly", "repeat": Repeat.weekly, "repeat_count": 45}]
    await sched.create_protocol(db, study, battery, visits=weekly)
    participant = await _enrol(db, site, tz, datetime(2026, 2, 2, 12, tzinfo=UTC))
    clock.set(datetime(2026, 2, 2, 13, tzinfo=UTC))
    assert (await sweep.sweep(db, now=clock.now())).materialised >= 1
    rows = await _rows(db, participant)
    assert len(rows) == 45
    zone = ZoneInfo(tz)
    for row in rows:
        local_start = row.window_start.astimezone(zone)
        assert (local_start.hour, local_start.minute) == (9, 0), local_start
        assert local_start.astimezone(zone).weekday() == 0  # every Monday
        assert row.window_end.astimezone(zone).time() == time(21, 0)
    hours = {r.window_start.date(): r.window_start.hour for r in rows}
    assert hours[date(2026, 2, 2)] == winter_utc_hour  # before spring forward
    assert hours[date(2026, 7, 6)] == summer_utc_hour  # summer time
    assert hours[date(2026, 12, 7)] == winter_utc_hour  # after fall back


def test_nonexistent_and_ambiguous_local_times_follow_the_documented_rule() -> None:
    """Spring forward: 02:30 does not exist, moved forward by the gap (03:30 local). Fall back:
    the first of the two (still summer time)."""
    rule = VisitRule(uuid.uuid4(), 0, time(2, 30), 0, 60, Repeat.none, 1)
    cases = [
        ("Europe/Berlin", date(2026, 3, 29), datetime(2026, 3, 29, 1, 30, tzinfo=UTC)),
        ("Europe/Berlin", date(2026, 10, 25), datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
        ("America/New_York", date(2026, 3, 8), datetime(2026, 3, 8, 7, 30, tzinfo=UTC)),
    ]
    for tz, day, expected in cases:
        (window,) = windows((rule,), tz, day)
        assert window.start == expected, (tz, day, window.start)
    spring = windows((rule,), "Europe/Berlin", date(2026, 3, 29))[0]
    assert spring.start.astimezone(ZoneInfo("Europe/Berlin")).time() == time(3, 30)
    ambiguous = VisitRule(uuid.uuid4(), 0, time(1, 30), 0, 60, Repeat.none, 1)
    (fall,) = windows((ambiguous,), "America/New_York", date(2026, 11, 1))
    assert fall.start == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT, not EST


async def test_a_visit_without_a_session_turns_missed_when_its_window_closes(
    db: AsyncSession, frozen: None
) -> None:
    study, site, battery = await _study(db)
    await sched.create_protocol(db, study, battery)
    participant = await _enrol(db, site, "Europe/Berlin", datetime(2026, 3, 2, 7, tzinfo=UTC))
    clock.set(datetime(2026, 3, 2, 7, 30, tzinfo=UTC))
    await sweep.sweep(db, now=clock.now())
    baseline = (await _rows(db, participant))[0]
    assert baseline.window_end == datetime(2026, 3, 2, 20, tzinfo=UTC)  # 21:00 CET
    clock.set(datetime(2026, 3, 2, 19, 59, tzinfo=UTC))
    await sweep.sweep(db, now=clock.now())
    assert (await _rows(db, participant))[0].status == VisitStatus.open
    clock.advance(timedelta(minutes=1))
    result = await sweep.sweep(db, now=clock.now())
    assert result.missed == 1
    rows = await _rows(db, participant)
    assert rows[0].status == VisitStatus.missed
    assert {r.status for r in rows[1:]} == {VisitStatus.upcoming}


async def test_a_session_completed_inside_the_window_completes_the_visit_and_outside_does_not(
    client: AsyncClient, db: AsyncSession, settings: Settings, frozen: None
) -> None:
    study, site, battery = await _study(db)
    await sched.create_protocol(db, study, battery)
    inside = await _enrol(db, site, "America/New_York", datetime(2026, 3, 2, 15, tzinfo=UTC))
    outside = await _enrol(db, site, "America/New_York", datetime(2026, 3, 2, 15, tzinfo=UTC))
    clock.set(datetime(2026, 3, 2, 15, 30, tzinfo=UTC))  # 10:30 EST, baseline open
    await sweep.sweep(db, now=clock.now())
    for participant, through_sync in ((inside, False), (outside, True)):
        headers = await ingest.participant_headers(db, settings, participant)
        me = (await client.get("/api/schedules/me", headers=headers)).json()
        assert [v["visit_key"] for v in me["due_now"]] == ["baseline"]
        assert [v["visit_key"] for v in me["next"]] == ["week1", "week4", "week12"]
        visit_id = me["due_now"][0]["id"]
        session_id = str(uuid.uuid4())
        start = {
            "session_id": session_id,
            "battery_id": str(battery.id),
            "client_started_at": clock.now().isoformat(),
        }
        if through_sync:
            # No visit named: matched to the window open when it ends; but it ends too late.
            clock.set(datetime(2026, 3, 3, 3, tzinfo=UTC))  # 22:00 EST: the window closed
            items = [
                {"type": "session_start", "data": start},
                {"type": "session_end", "data": {"session_id": session_id, "status": "completed"}},
            ]
            synced = await client.post("/api/sync", json={"items": items}, headers=headers)
            assert synced.json()["stored"] == 2, synced.text
        else:
            started = await client.post(
                "/api/session/start", json={**start, "visit_id": visit_id}, headers=headers
            )
            assert started.status_code == 201, started.text
            clock.advance(timedelta(minutes=20))
            end = {"session_id": session_id, "status": "completed"}
            ended = await client.post("/api/session/end", json=end, headers=headers)
            assert ended.json()["visit_occurrence_id"] == visit_id
    baseline_in = (await _rows(db, inside))[0]
    assert baseline_in.status == VisitStatus.completed
    assert baseline_in.completed_at == datetime(2026, 3, 2, 15, 50, tzinfo=UTC)
    await sweep.sweep(db, now=clock.now())
    assert (await _rows(db, outside))[0].status == VisitStatus.missed


async def test_session_start_refuses_another_participants_visit(
    client: AsyncClient, db: AsyncSession, settings: Settings, frozen: None
) -> None:
    study, site, battery = await _study(db)
    await sched.create_protocol(db, study, battery)
    mine = await _enrol(db, site, "UTC", datetime(2026, 3, 2, 8, tzinfo=UTC))
    theirs = await _enrol(db, site, "UTC", datetime(2026, 3, 2, 8, tzinfo=UTC))
    clock.set(datetime(2026, 3, 2, 10, tzinfo=UTC))
    await sweep.sweep(db, now=clock.now())
    their_visit = (await _rows(db, theirs))[0]
    headers = await ingest.participant_headers(db, settings, mine)
    start = {
        "session_id": str(uuid.uuid4()),
        "battery_id": str(battery.id),
        "client_started_at": clock.now().isoformat(),
        "visit_id": str(their_visit.id),
    }
    refused = await client.post("/api/session/start", json=start, headers=headers)
    assert refused.status_code == 422
    me = (await client.get("/api/schedules/me", headers=headers)).json()
    assert str(their_visit.id) not in {v["id"] for v in me["due_now"] + me["next"]}
    # A participant token opens none of the staff routes, another's schedule included.
    staff = await client.get(f"/api/schedules/participants/{theirs.id}", headers=headers)
    assert staff.status_code == 403  # a staff route: no participant token opens it


async def test_a_new_protocol_version_applies_as_the_coordinator_chose(
    db: AsyncSession, frozen: None
) -> None:
    study, site, battery = await _study(db)
    jan = datetime(2026, 1, 5, tzinfo=UTC)
    v1, _ = await sched.create_protocol(db, study, battery, published_at=jan)
    early = await _enrol(db, site, "UTC", datetime(2026, 2, 2, 8, tzinfo=UTC))
    clock.set(datetime(2026, 2, 2, 10, tzinfo=UTC))
    await sweep.sweep(db, now=clock.now())
    # v2 for new enrolments only.
    v2, _ = await sched.create_protocol(
        db,
        study,
        battery,
        version=2,
        published_at=datetime(2026, 2, 10, tzinfo=UTC),
        visits=[{"key": "baseline", "offset_days": 0}, {"key": "day3", "offset_days": 3}],
    )
    late = await _enrol(db, site, "UTC", datetime(2026, 2, 16, 8, tzinfo=UTC))
    clock.set(datetime(2026, 2, 16, 10, tzinfo=UTC))
    await sweep.sweep(db, now=clock.now())
    assert {r.protocol_id for r in await _rows(db, early)} == {v1.id}
    assert {r.protocol_id for r in await _rows(db, late)} == {v2.id}
    # v3 for everyone from 1 March: earlier visits stay, later ones are v3's.
    march = datetime(2026, 3, 1, tzinfo=UTC)
    v3, _ = await sched.create_protocol(
        db,
        study,
        battery,
        version=3,
        published_at=datetime(2026, 2, 20, tzinfo=UTC),
        applies_to=AppliesTo.everyone_from,
        effective_from=march,
        visits=[{"key": "baseline", "offset_days": 0}, {"key": "month2", "offset_days": 56}],
    )
    clock.set(datetime(2026, 2, 20, 10, tzinfo=UTC))
    assert (await sweep.sweep(db, now=clock.now())).switched == 2
    rows = await _rows(db, early)
    live = [r for r in rows if r.status != VisitStatus.cancelled]
    assert [r.protocol_id for r in live if r.window_start < march] == [v1.id, v1.id]
    assert {r.protocol_id for r in live if r.window_start >= march} == {v3.id}
    cancelled = [r for r in rows if r.status == VisitStatus.cancelled]
    assert cancelled and all(r.window_start >= march for r in cancelled)
    assert (await sweep.sweep(db, now=clock.now())).switched == 0  # idempotent


async def test_a_time_zone_change_moves_future_visits_only(db: AsyncSession, frozen: None) -> None:
    study, site, battery = await _study(db)
    await sched.create_protocol(db, study, battery)
    participant = await _enrol(db, site, "Europe/Berlin", datetime(2026, 3, 2, 7, tzinfo=UTC))
    clock.set(datetime(2026, 3, 2, 7, 30, tzinfo=UTC))
    await sweep.sweep(db, now=clock.now())
    before = {r.id: (r.window_start, r.window_end) for r in await _rows(db, participant)}
    clock.set(datetime(2026, 3, 12, tzinfo=UTC))  # after week 1, before week 4
    participant.timezone = "America/New_York"
    await db.flush()
    assert (await sweep.sweep(db, now=clock.now())).recomputed == 1
    after = await _rows(db, participant)
    new_york = ZoneInfo("America/New_York")
    for row in after:
        if row.window_start < clock.now():
            assert (row.window_start, row.window_end) == before[row.id]  # the past stays
        else:
            local = row.window_start.astimezone(new_york)
            assert (local.hour, local.minute) == (9, 0)
            assert row.window_start != before[row.id][0]
    assert sum(1 for r in after if r.window_start >= clock.now()) == 2
    assert (await sweep.sweep(db, now=clock.now())).recomputed == 0


async def test_coordinator_overrides_are_audited_and_withdrawal_cancels_the_future(
    client: AsyncClient, db: AsyncSession, settings: Settings, frozen: None
) -> None:
    study, site, battery = await _study(db)
    await sched.create_protocol(db, study, battery)
    participant = await _enrol(db, site, "UTC", datetime(2026, 3, 2, 8, tzinfo=UTC))
    clock.set(datetime(2026, 3, 3, tzinfo=UTC))  # baseline's window closed
    await sweep.sweep(db, now=clock.now())
    coordinator = await factories.create_user(db)
    await factories.add_member(db, study, coordinator, StudyRole.coordinator)
    headers = await factories.auth_headers(db, settings, coordinator)
    listed = (
        await client.get(f"/api/schedules/participants/{participant.id}", headers=headers)
    ).json()
    baseline, week1 = listed[0], listed[1]
    assert baseline["status"] == "missed"
    reopened = await client.post(
        f"/api/schedules/visits/{baseline['id']}/reopen",
        json={"reason": "phone lost"},
        headers=headers,
    )
    assert reopened.status_code == 200 and reopened.json()["status"] == "open", reopened.text
    moved = await client.post(
        f"/api/schedules/visits/{week1['id']}/move",
        json={
            "reason": "holiday",
            "window_start": "2026-03-11T09:00:00Z",
            "window_end": "2026-03-12T09:00:00Z",
        },
        headers=headers,
    )
    assert moved.json()["window_start"].startswith("2026-03-11T09:00"), moved.text
    skipped = await client.post(
        f"/api/schedules/visits/{week1['id']}/skip", json={"reason": "in hospital"}, headers=headers
    )
    assert skipped.json()["status"] == "skipped"
    again = await client.post(
        f"/api/schedules/visits/{week1['id']}/skip", json={"reason": "twice"}, headers=headers
    )
    assert again.status_code == 409
    entries = (
        await db.scalars(select(AuditEntry).where(AuditEntry.action == "schedule_visit_overridden"))
    ).all()
    mine = [e for e in entries if e.study_id == study.id]
    assert [(e.summary["override"], e.summary["reason"]) for e in mine] == [
        ("reopen", "phone lost"),
        ("move", "holiday"),
        ("skip", "in hospital"),
    ]
    cancelled = await service.cancel_future_visits(
        db, participant_id=participant.id, at=clock.now(), reason="withdrawn"
    )
    assert cancelled == 3  # the reopened baseline, week 4, week 12; the skipped one stays
    statuses = [r.status for r in await _rows(db, participant)]
    assert statuses.count(VisitStatus.cancelled) == 3 and VisitStatus.skipped in statuses


async def test_protocols_are_versioned_and_immutable_once_published(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, _, battery = await _study(db)
    coordinator = await factories.create_user(db)
    await factories.add_member(db, study, coordinator, StudyRole.coordinator)
    headers = await factories.auth_headers(db, settings, coordinator)
    body = {
        "name": "Main",
        "visits": [
            {"key": "baseline", "label": "Baseline", "battery_id": str(battery.id)},
            {
                "key": "burst",
                "label": "Daily burst",
                "battery_id": str(battery.id),
                "anchor_visit_key": "baseline",
                "offset_days": 1,
                "repeat": "daily",
                "repeat_count": 7,
            },
        ],
    }
    created = await client.post(
        f"/api/schedules/protocols?study_id={study.id}", json=body, headers=headers
    )
    assert created.status_code == 201, created.text
    protocol = created.json()
    assert protocol["version"] == 1 and protocol["status"] == "draft"
    url = f"/api/schedules/protocols/{protocol['id']}"
    published = await client.post(f"{url}/publish", json={}, headers=headers)
    assert published.json()["status"] == "published"
    refused = await client.patch(url, json={"name": "Changed"}, headers=headers)
    assert refused.status_code == 409 and refused.json()["error_code"] == "protocol_published"
    bad = {**body, "visits": [{**body["visits"][1], "anchor_visit_key": "nowhere"}]}
    invalid = await client.post(
        f"/api/schedules/protocols?study_id={study.id}", json=bad, headers=headers
    )
    assert invalid.status_code == 422
    second = await client.post(
        f"/api/schedules/protocols?study_id={study.id}", json=body, headers=headers
    )
    assert second.json()["version"] == 2


async def test_the_beat_sweep_runs_once_at_a_time_and_is_idempotent(
    db: AsyncSession, frozen: None
) -> None:
    study, site, battery = await _study(db)
    await sched.create_protocol(db, study, battery)
    participant = await _enrol(db, site, "Asia/Tokyo", datetime(2026, 3, 2, 1, tzinfo=UTC))
    clock.set(datetime(2026, 3, 2, 2, tzinfo=UTC))
    first = await sweep.run_once(db, now=clock.now())
    assert first is not None and first.materialised >= 1
    again = await sweep.run_once(db, now=clock.now())
    assert again is not None and again.materialised == 0
    assert len(await _rows(db, participant)) == 4
