"""POST /api/submit: receipts, idempotency, gzip, 413, who may submit.

Problems with the tasks (quarantine at ingest): tests/test_submit_problems.py."""

from __future__ import annotations

import copy
import gzip
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from httpx import AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.assessment_sessions.models import AssessmentSession
from server.core.config import Settings
from server.modules.models import Module
from server.outbox.models import OutboxEvent
from server.participants.models import Participant
from server.studies.models import StudyRole
from server.submissions.models import Submission, SubmissionTask
from tests import factories
from tests import ingest_factories as ingest


@dataclass
class Visit:
    participant: Participant
    session: AssessmentSession
    modules: list[Module]
    headers: dict[str, str]


@pytest.fixture
async def visit(db: AsyncSession, settings: Settings) -> Visit:
    study = await factories.create_study(db)
    site = await factories.create_site(db, study)
    participant = await factories.create_participant(db, site)
    modules = await ingest.standard_modules(db)
    battery = await ingest.create_battery(db, study, modules)
    session = await ingest.start_session(db, participant, battery)
    headers = await ingest.participant_headers(db, settings, participant)
    return Visit(participant, session, modules, headers)


async def _count(db: AsyncSession, model: Any, **where: Any) -> int:
    query = select(func.count()).select_from(model)
    for key, value in where.items():
        query = query.where(getattr(model, key) == value)
    return int(await db.scalar(query) or 0)


async def test_submit_stores_everything_and_answers_a_receipt(
    client: AsyncClient, db: AsyncSession, visit: Visit
) -> None:
    body = ingest.payload(visit.session.id, visit.modules, n_trials=100)
    response = await client.post("/api/submit", json=body, headers=visit.headers)
    assert response.status_code == 201, response.text
    receipt = response.json()
    assert set(receipt) == {
        "submission_id",
        "client_submission_id",
        "session_id",
        "checksum",
        "received_at",
        "status",
        "problems",
    }
    assert (receipt["status"], receipt["problems"]) == ("accepted", [])
    assert len(receipt["checksum"]) == 64
    submission = await db.get(Submission, receipt["submission_id"])
    assert submission is not None and orjson.loads(submission.raw_payload) == body
    tasks = (
        (
            await db.execute(
                select(SubmissionTask)
                .where(SubmissionTask.submission_id == submission.id)
                .order_by(SubmissionTask.position)
            )
        )
        .scalars()
        .all()
    )
    assert [t.module_key for t in tasks] == [m.key for m in visit.modules]
    assert [t.n_trials for t in tasks] == [100, 100, 100]
    assert tasks[0].trials[42] == body["tasks"][0]["trials"][42]
    outbox = (
        (await db.execute(select(OutboxEvent.topic).where(OutboxEvent.subject_id == submission.id)))
        .scalars()
        .all()
    )
    assert sorted(outbox) == ["archive.submission", "redcap.sync_submission", "scoring.submission"]


async def test_same_key_same_payload_is_the_same_receipt_and_nothing_twice(
    client: AsyncClient, db: AsyncSession, visit: Visit
) -> None:
    body = ingest.payload(visit.session.id, visit.modules)
    first = await client.post("/api/submit", json=body, headers=visit.headers)
    # Same data, keys in another order: the same payload.
    reordered = dict(reversed(list(body.items())))
    again = await client.post(
        "/api/submit",
        content=orjson.dumps(reordered),
        headers={**visit.headers, "Content-Type": "application/json"},
    )
    third = await client.post("/api/submit", json=body, headers=visit.headers)
    assert first.status_code == 201
    assert again.status_code == 200 and third.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json() == third.json()
    assert await _count(db, Submission, participant_id=visit.participant.id) == 1
    assert await _count(db, OutboxEvent, subject_id=first.json()["submission_id"]) == 3


async def test_same_key_different_payload_is_409_and_changes_nothing(
    client: AsyncClient, db: AsyncSession, visit: Visit
) -> None:
    body = ingest.payload(visit.session.id, visit.modules)
    assert (await client.post("/api/submit", json=body, headers=visit.headers)).status_code == 201
    changed = copy.deepcopy(body)
    changed["tasks"][0]["trials"][0]["rt_ms"] += 1
    changed["tasks"][0]["summary"] = ingest.summary_of(changed["tasks"][0]["trials"])
    response = await client.post("/api/submit", json=changed, headers=visit.headers)
    assert response.status_code == 409
    assert response.json()["error_code"] == "idempotency_conflict"
    assert await _count(db, Submission, participant_id=visit.participant.id) == 1


async def test_not_json_and_unknown_session(
    client: AsyncClient, db: AsyncSession, visit: Visit
) -> None:
    garbage = await client.post(
        "/api/submit",
        content=b"{nope",
        headers={**visit.headers, "Content-Type": "application/json"},
    )
    assert garbage.status_code == 422 and garbage.json()["error_code"] == "invalid_json"
    body = ingest.payload(visit.session.id, visit.modules)
    body["session_id"] = "00000000-0000-4000-8000-000000000000"
    unknown = await client.post("/api/submit", json=body, headers=visit.headers)
    assert unknown.status_code == 404
    assert unknown.json()["details"][0]["loc"] == ["body", "session_id"]


async def test_gzip_body_is_accepted(client: AsyncClient, db: AsyncSession, visit: Visit) -> None:
    body = ingest.payload(visit.session.id, visit.modules, n_trials=300)
    raw = orjson.dumps(body)
    compressed = gzip.compress(raw)
    assert len(compressed) < len(raw) / 3
    response = await client.post(
        "/api/submit",
        content=compressed,
        headers={**visit.headers, "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 201, response.text
    stored = await db.get(Submission, response.json()["submission_id"])
    assert stored is not None and stored.raw_payload == raw
    bad = await client.post(
        "/api/submit",
        content=b"\x1f\x8bnot gzip",
        headers={**visit.headers, "Content-Encoding": "gzip"},
    )
    assert bad.status_code == 422
    br = await client.post(
        "/api/submit", content=raw, headers={**visit.headers, "Content-Encoding": "br"}
    )
    assert br.status_code == 415 and br.json()["error_code"] == "unsupported_media_type"


async def test_body_over_the_limit_is_413(
    app_instance: Any, client: AsyncClient, db: AsyncSession, visit: Visit, settings: Settings
) -> None:
    limit = settings.MAX_SUBMISSION_BYTES
    body = ingest.payload(visit.session.id, visit.modules, n_trials=10)
    body["padding"] = "x" * (limit + 10)
    too_big = await client.post("/api/submit", json=body, headers=visit.headers)
    assert too_big.status_code == 413
    assert too_big.json()["error_code"] == "payload_too_large"
    # Small on the wire, too big once inflated: still 413, never inflated past the limit.
    bomb = gzip.compress(b"[" + b"0," * (limit // 2 + 10) + b"0]")
    assert len(bomb) < limit
    inflated = await client.post(
        "/api/submit", content=bomb, headers={**visit.headers, "Content-Encoding": "gzip"}
    )
    assert inflated.status_code == 413
    assert await _count(db, Submission, participant_id=visit.participant.id) == 0


async def test_participant_token_is_scoped_to_its_participant(
    client: AsyncClient, db: AsyncSession, settings: Settings, visit: Visit
) -> None:
    other = await factories.create_participant(
        db, await factories.create_site(db, await factories.create_study(db))
    )
    other_headers = await ingest.participant_headers(db, settings, other)
    body = ingest.payload(visit.session.id, visit.modules)
    # Another participant cannot submit into, read or end this participant's session.
    stolen = await client.post("/api/submit", json=body, headers=other_headers)
    assert stolen.status_code == 404
    read = await client.get(f"/api/session/{visit.session.id}", headers=other_headers)
    assert read.status_code == 404
    end = await client.post(
        "/api/session/end",
        headers=other_headers,
        json={"session_id": str(visit.session.id), "status": "abandoned"},
    )
    assert end.status_code == 404
    assert await _count(db, Submission) == 0
    # No staff route accepts a participant token, and each says it is for staff.
    for method, url in [
        ("GET", "/api/studies"),
        ("GET", f"/api/participants/{visit.participant.id}"),
        ("GET", f"/api/participants/{visit.participant.id}/sessions"),
        ("GET", "/api/auth/me"),
        ("GET", "/api/user-sessions"),
    ]:
        response = await client.request(method, url, headers=visit.headers)
        assert response.status_code == 403, (url, response.status_code)
        assert response.json()["error_code"] == "staff_only"
    # And no participant route accepts a staff token.
    staff = await factories.create_user(db, is_admin=True)
    staff_headers = await factories.auth_headers(db, settings, staff)
    as_staff = await client.post("/api/submit", json=body, headers=staff_headers)
    assert as_staff.status_code == 401


async def test_coordinator_sees_the_session_and_data_at_once(
    client: AsyncClient, db: AsyncSession, settings: Settings, visit: Visit
) -> None:
    body = ingest.payload(visit.session.id, visit.modules, n_trials=12)
    receipt = (await client.post("/api/submit", json=body, headers=visit.headers)).json()
    coordinator = await factories.create_user(db)
    study = await db.get(AssessmentSession, visit.session.id)
    assert study is not None
    from server.studies.models import Study

    study_row = await db.get(Study, visit.participant.study_id)
    assert study_row is not None
    await factories.add_member(db, study_row, coordinator, StudyRole.coordinator)
    headers = await factories.auth_headers(db, settings, coordinator)
    sessions = await client.get(
        f"/api/participants/{visit.participant.id}/sessions", headers=headers
    )
    assert sessions.status_code == 200
    [session] = sessions.json()
    assert session["id"] == str(visit.session.id)
    [brief] = session["submissions"]
    assert brief["id"] == receipt["submission_id"]
    assert [t["module_key"] for t in brief["tasks"]] == [m.key for m in visit.modules]
    full = await client.get(f"/api/submissions/{receipt['submission_id']}", headers=headers)
    assert full.status_code == 200
    assert full.json()["tasks"][2]["trials"] == body["tasks"][2]["trials"]
