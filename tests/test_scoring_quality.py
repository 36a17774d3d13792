"""Server-side scoring and data-quality flags through the API: a wrong summary is stored and
flagged, not refused; a crafted session fires every rule and a clean one none; scores are
kept per scorer version; thresholds per study; another study's session is a 404."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.outbox.models import OutboxEvent
from server.scoring import scorers
from server.scoring.models import TaskScore
from server.scoring.quality import DEFAULTS
from server.studies.models import StudyRole
from server.submissions import scoring_run
from tests import factories
from tests import scoring_factories as make
from tests.scoring_factories import Lab

CLEAN_MOOD = [2, 1, 3, 0, 1, 2, 0, 3, 1]


@pytest.fixture
async def lab(db: AsyncSession, settings: Settings) -> Lab:
    return await make.lab(db, settings)


async def _submit(client: AsyncClient, lab: Lab, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/api/submit", json=body, headers=lab.device_headers)
    assert response.status_code == 201, response.text
    return response.json()


async def _end(client: AsyncClient, lab: Lab, after_s: float) -> None:
    ended = lab.session.client_started_at + timedelta(seconds=after_s)
    response = await client.post(
        "/api/session/end",
        json={
            "session_id": str(lab.session.id),
            "status": "completed",
            "client_ended_at": ended.isoformat(),
        },
        headers=lab.device_headers,
    )
    assert response.status_code == 200, response.text


async def _quality(client: AsyncClient, lab: Lab) -> dict[str, Any]:
    response = await client.get(
        f"/api/sessions/{lab.session.id}/quality", headers=lab.staff_headers
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_wrong_summary_is_stored_scored_by_the_server_and_flagged(
    client: AsyncClient, db: AsyncSession, lab: Lab
) -> None:
    task = make.clean_simple_rt()
    honest = task["summary"]["mean_rt_ms"]
    task["summary"]["mean_rt_ms"] = honest + 40.0  # the phone's own arithmetic was wrong
    receipt = await _submit(client, lab, make.submission(lab.session, [task]))
    # Scoring is the outbox's work, not the request's: the row waits for the worker.
    topics = await db.scalars(
        select(OutboxEvent.topic).where(OutboxEvent.subject_id == receipt["submission_id"])
    )
    assert "scoring.submission" in set(topics)

    await scoring_run.score_submission(db, uuid.UUID(receipt["submission_id"]))

    quality = await _quality(client, lab)
    (score,) = quality["scores"]
    assert score["server_summary"]["mean_rt_ms"] == pytest.approx(honest)
    assert score["client_summary"]["mean_rt_ms"] == pytest.approx(honest + 40.0)
    mean = score["comparison"]["mean_rt_ms"]
    assert mean["mismatch"] is True and mean["diff"] == pytest.approx(-40.0)
    assert score["n_mismatches"] == 1
    assert not score["comparison"]["n_trials"]["mismatch"]
    # Every number traces to module, scorer, raw bytes, session and device.
    assert score["trace"] == {
        "module_key": "simple_rt",
        "module_version": 1,
        "scorer_key": "simple_rt",
        "scorer_version": "1",
        "raw_checksum": receipt["checksum"],
        "submission_id": receipt["submission_id"],
        "session_id": str(lab.session.id),
        "device": {"model": "Pixel 8", "os": "Android 15"},
        "app_version": "2.4.1",
    }
    flagged = {(f["rule"], f["module_key"]) for f in quality["flags"]}
    assert ("summary_mismatch", "simple_rt") in flagged
    # The staff's session list carries the same flags.
    sessions = await client.get(
        f"/api/participants/{lab.participant.id}/sessions", headers=lab.staff_headers
    )
    assert sessions.status_code == 200
    (listed,) = sessions.json()
    assert {f["rule"] for f in listed["quality_flags"]} == {f["rule"] for f in quality["flags"]}


async def test_a_clean_session_raises_no_flag(
    client: AsyncClient, db: AsyncSession, lab: Lab
) -> None:
    tasks = [make.clean_simple_rt(), make.clean_cpt(), make.mood(CLEAN_MOOD)]
    receipt = await _submit(client, lab, make.submission(lab.session, tasks))
    await _end(client, lab, after_s=make.NORM_S)
    await scoring_run.score_submission(db, uuid.UUID(receipt["submission_id"]))
    await scoring_run.check_session(db, lab.session.id)

    quality = await _quality(client, lab)
    assert quality["flags"] == []
    # Every rule was evaluated (quiet, not skipped), each with its version and thresholds.
    assert {c["rule"] for c in quality["checks"]} == set(DEFAULTS)
    assert all(c["rule_version"] == "1" and c["threshold"] for c in quality["checks"])
    assert all(s["n_mismatches"] == 0 for s in quality["scores"])


async def test_a_crafted_session_fires_every_rule(
    client: AsyncClient, db: AsyncSession, lab: Lab
) -> None:
    # RTs sent in seconds (0.25 ...), every other trial missed, one 60 s pause, and a wrong
    # summary; the same answer to every item; no CPT; the app went to the background; the
    # phone's clock an hour ahead; the session over in a minute.
    rts: list[float | None] = [None if i % 2 else 0.25 + i / 100 for i in range(20)]
    trials = make.rt_trials(rts)
    for t in trials[10:]:
        t["stimulus_onset_ms"] += 60_000.0
    slow = {
        "module_key": "simple_rt",
        "module_version": 1,
        "summary": {**make.rt_summary(trials), "n_lapses": 0},
        "trials": trials,
    }
    body = make.submission(
        lab.session,
        [slow, make.mood([1] * 9)],
        sent_at=datetime.now(UTC) + timedelta(hours=1),
        events=[{"type": "app_backgrounded", "at": datetime.now(UTC).isoformat()}],
    )
    receipt = await _submit(client, lab, body)
    await _end(client, lab, after_s=60)
    await scoring_run.score_submission(db, uuid.UUID(receipt["submission_id"]))
    await scoring_run.check_session(db, lab.session.id)

    flags = {f["rule"]: f for f in (await _quality(client, lab))["flags"]}
    assert set(flags) == set(DEFAULTS)
    assert flags["rt_units"]["observed"] < 10 and flags["rt_units"]["module_key"] == "simple_rt"
    assert flags["omissions"]["observed"] == 0.5
    assert flags["long_gap"]["observed"] == pytest.approx(61_500.0)
    assert flags["straight_lining"]["module_key"] == "mood9"
    assert flags["incomplete_battery"]["detail"] == {"missing": ["cpt"]}
    assert flags["focus_loss"]["observed"] == 1
    assert flags["clock_drift"]["observed"] == pytest.approx(3600, abs=30)
    assert flags["duration"]["observed"] == 60 and flags["duration"]["threshold"]["norm_s"] == 780


async def test_scoring_twice_is_one_row_and_a_new_scorer_version_keeps_the_old(
    client: AsyncClient, db: AsyncSession, lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    receipt = await _submit(client, lab, make.submission(lab.session, [make.clean_simple_rt()]))
    await scoring_run.score_submission(db, uuid.UUID(receipt["submission_id"]))
    await scoring_run.score_submission(db, uuid.UUID(receipt["submission_id"]))

    async def versions() -> list[str]:
        rows = await db.scalars(
            select(TaskScore.scorer_version)
            .where(TaskScore.submission_id == receipt["submission_id"])
            .order_by(TaskScore.computed_at)
        )
        return list(rows)

    assert await versions() == ["1"]
    newer = scorers.Scorer("simple_rt", "2", scorers.score_simple_rt)
    monkeypatch.setitem(scorers.BUILTIN, ("simple_rt", 1), newer)
    await scoring_run.score_submission(db, uuid.UUID(receipt["submission_id"]))
    assert await versions() == ["1", "2"]
    quality = await _quality(client, lab)
    assert [s["trace"]["scorer_version"] for s in quality["scores"]] == ["1", "2"]


async def test_a_study_sets_its_own_thresholds(
    client: AsyncClient, db: AsyncSession, lab: Lab, settings: Settings
) -> None:
    url = f"/api/studies/{lab.study.id}/quality-thresholds"
    # 3 of 20 trials at 60 ms: 15 % anticipations, over the default 10 %
    rts: list[float | None] = [60.0 if i < 3 else 300.0 + i for i in range(20)]
    trials = make.rt_trials(rts)
    task = {
        "module_key": "simple_rt",
        "module_version": 1,
        "summary": make.rt_summary(trials),
        "trials": trials,
    }
    receipt = await _submit(client, lab, make.submission(lab.session, [task]))
    await scoring_run.score_submission(db, uuid.UUID(receipt["submission_id"]))
    assert "anticipations" in {f["rule"] for f in (await _quality(client, lab))["flags"]}

    bad = await client.put(
        url,
        json={"thresholds": {"*": {"anticipations": {"ceiling": 1}}}},
        headers=lab.staff_headers,
    )
    assert bad.status_code == 422 and bad.json()["error_code"]
    assert (await client.get(url, headers=lab.staff_headers)).json() == {"thresholds": {}}

    relaxed = {"simple_rt": {"anticipations": {"max_share": 0.2}}}
    response = await client.put(url, json={"thresholds": relaxed}, headers=lab.staff_headers)
    assert response.status_code == 200, response.text
    assert (await client.get(url, headers=lab.staff_headers)).json() == {"thresholds": relaxed}
    await scoring_run.check_session(db, lab.session.id)
    checks = {c["rule"]: c for c in (await _quality(client, lab))["checks"]}
    assert checks["anticipations"]["fired"] is False
    assert checks["anticipations"]["threshold"] == {"floor_ms": 100.0, "max_share": 0.2}

    viewer = await factories.create_user(db)
    await factories.add_member(db, lab.study, viewer, StudyRole.viewer)
    headers = await factories.auth_headers(db, settings, viewer)
    refused = await client.put(url, json={"thresholds": {}}, headers=headers)
    assert refused.status_code == 403


async def test_another_studys_session_quality_is_a_404(
    client: AsyncClient, db: AsyncSession, lab: Lab, settings: Settings
) -> None:
    other = await make.lab(db, settings)
    response = await client.get(
        f"/api/sessions/{lab.session.id}/quality", headers=other.staff_headers
    )
    assert response.status_code == 404 and response.json()["error_code"] == "not_found"
    assert (await client.get(f"/api/sessions/{lab.session.id}/quality")).status_code == 401


async def test_ending_a_session_queues_its_quality_check(
    client: AsyncClient, db: AsyncSession, lab: Lab
) -> None:
    await _end(client, lab, after_s=make.NORM_S)
    count = await db.scalar(
        select(func.count())
        .select_from(OutboxEvent)
        .where(OutboxEvent.topic == "scoring.session", OutboxEvent.subject_id == lab.session.id)
    )
    assert count == 1


async def test_a_coordinator_queues_a_study_for_scoring_again(
    client: AsyncClient, db: AsyncSession, lab: Lab, settings: Settings
) -> None:
    first = await _submit(client, lab, make.submission(lab.session, [make.clean_simple_rt()]))
    second = await _submit(client, lab, make.submission(lab.session, [make.clean_cpt()]))
    url = f"/api/studies/{lab.study.id}/rescore"
    response = await client.post(url, headers=lab.staff_headers)
    assert response.status_code == 202, response.text
    assert response.json() == {"queued": 2}
    for receipt in (first, second):
        topics = await db.scalars(
            select(OutboxEvent.topic).where(
                OutboxEvent.subject_id == uuid.UUID(receipt["submission_id"]),
                OutboxEvent.topic == "scoring.submission",
            )
        )
        assert len(list(topics)) == 2  # at ingest, and now

    other = await make.lab(db, settings)
    assert (await client.post(url, headers=other.staff_headers)).status_code == 404
    viewer = await factories.create_user(db)
    await factories.add_member(db, lab.study, viewer, StudyRole.viewer)
    headers = await factories.auth_headers(db, settings, viewer)
    assert (await client.post(url, headers=headers)).status_code == 403
