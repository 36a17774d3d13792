"""Archiving submissions, and rebuilding a study's submissions from the archive alone."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from httpx import AsyncClient
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from server.archive.rebuild import rebuild_study
from server.archive.service import FORMAT, archive_key, archive_submission
from server.archive.storage import LocalStorage
from server.assessment_sessions.models import AssessmentSession, SessionStatus
from server.cli import ROOT, migrate
from server.core.config import Settings
from server.modules.models import Module
from server.outbox.models import OutboxEvent
from server.participants.models import Participant
from server.studies.models import Site, Study
from server.submissions import service as submissions_service
from server.submissions.models import Submission, SubmissionTask
from server.submissions.schemas import SubmissionIn
from tests import factories
from tests import ingest_factories as ingest
from tests.conftest import TEST_SECRET, create_database, drop_database, make_settings


@dataclass
class Visit:
    study: Study
    site: Site
    participant: Participant
    session: AssessmentSession
    modules: list[Module]
    headers: dict[str, str]


async def _visit(
    db: AsyncSession, settings: Settings, study: Study, site: Site, modules: list[Module]
) -> Visit:
    participant = await factories.create_participant(db, site)
    battery = await ingest.create_battery(db, study, modules)
    session = await ingest.start_session(db, participant, battery)
    headers = await ingest.participant_headers(db, settings, participant)
    return Visit(study, site, participant, session, modules, headers)


@pytest.fixture
async def visit(db: AsyncSession, settings: Settings) -> Visit:
    study = await factories.create_study(db)
    site = await factories.create_site(db, study)
    return await _visit(db, settings, study, site, await ingest.standard_modules(db))


async def _submit(client: AsyncClient, visit: Visit, *, n_trials: int = 20) -> uuid.UUID:
    body = ingest.payload(visit.session.id, visit.modules, n_trials=n_trials)
    # Sent with its own spacing and key order: the archive must keep these bytes, not ours.
    raw = json.dumps(dict(reversed(list(body.items()))), indent=1).encode()
    response = await client.post(
        "/api/submit",
        content=raw,
        headers={**visit.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    return uuid.UUID(response.json()["submission_id"])


async def _raw_payload(db: AsyncSession, submission_id: uuid.UUID) -> tuple[bytes, str]:
    row = (
        await db.execute(
            select(Submission.raw_payload, Submission.checksum).where(
                Submission.id == submission_id
            )
        )
    ).one()
    return row[0], row[1]


async def _rows(db: AsyncSession, study_id: uuid.UUID) -> dict[str, list[dict[str, Any]]]:
    """Every column of the study's sessions, submissions and tasks, as plain values."""
    sessions = await db.execute(
        select(AssessmentSession.__table__)
        .where(AssessmentSession.study_id == study_id)
        .order_by(AssessmentSession.id)
    )
    submissions = await db.execute(
        select(Submission.__table__).where(Submission.study_id == study_id).order_by(Submission.id)
    )
    tasks = await db.execute(
        select(SubmissionTask.__table__)
        .join(Submission, Submission.id == SubmissionTask.submission_id)
        .where(Submission.study_id == study_id)
        .order_by(SubmissionTask.submission_id, SubmissionTask.position)
    )
    return {
        "sessions": [dict(r) for r in sessions.mappings()],
        "submissions": [dict(r) for r in submissions.mappings()],
        "tasks": [dict(r) for r in tasks.mappings()],
    }


async def _delete_submissions(db: AsyncSession, study_id: uuid.UUID) -> None:
    ids = select(Submission.id).where(Submission.study_id == study_id)
    no_sync = {"synchronize_session": False}
    await db.execute(
        delete(SubmissionTask).where(SubmissionTask.submission_id.in_(ids)),
        execution_options=no_sync,
    )
    await db.execute(
        delete(Submission).where(Submission.study_id == study_id), execution_options=no_sync
    )
    await db.execute(
        delete(AssessmentSession).where(AssessmentSession.study_id == study_id),
        execution_options=no_sync,
    )


class ReversedListing(LocalStorage):
    """Lists backwards: a rebuild must not depend on the order objects come in."""

    def list(self, prefix: str = "") -> Iterator[str]:
        return reversed(list(super().list(prefix)))


async def _count(db: AsyncSession, model: Any) -> int:
    return int(await db.scalar(select(func.count()).select_from(model)) or 0)


async def test_archive_writes_the_exact_bytes_under_the_stable_key(
    client: AsyncClient, db: AsyncSession, visit: Visit, tmp_path: Path
) -> None:
    submission_id = await _submit(client, visit)
    storage = LocalStorage(tmp_path)

    key = await archive_submission(db, storage, submission_id)

    assert key == archive_key(visit.study.id, visit.participant.id, visit.session.id, submission_id)
    assert key == (
        f"studies/{visit.study.id}/participants/{visit.participant.id}"
        f"/sessions/{visit.session.id}/submissions/{submission_id}.json"
    )
    path = tmp_path / key
    document = orjson.loads(path.read_bytes())
    raw, digest = await _raw_payload(db, submission_id)
    assert document["format"] == FORMAT
    assert base64.b64decode(document["payload_b64"]) == raw
    assert raw.startswith(b'{\n "client_submitted_at"')  # as sent, not re-serialised
    meta = document["submission"]
    assert meta["checksum"] == digest == submissions_service.checksum(orjson.loads(raw))
    assert meta["id"] == str(submission_id)
    assert meta["participant_code"] == visit.participant.participant_code
    assert meta["study_code"] == visit.study.code
    assert meta["site_code"] == visit.site.code
    assert meta["session"]["id"] == str(visit.session.id)
    assert meta["session"]["status"] == "in_progress"
    assert meta["session"]["battery_version"] == 1
    assert datetime.fromisoformat(meta["received_at"]).tzinfo is not None

    before = path.stat()
    assert await archive_submission(db, storage, submission_id) == key
    after = path.stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    assert list(storage.list()) == [key]

    # An object that does not hold the submission's bytes is put right from the database.
    path.write_bytes(b"damaged")
    assert await archive_submission(db, storage, submission_id) == key
    assert base64.b64decode(orjson.loads(path.read_bytes())["payload_b64"]) == raw


async def test_archive_of_a_missing_submission_is_none(db: AsyncSession, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    assert await archive_submission(db, storage, uuid.uuid4()) is None
    assert list(storage.list()) == []


async def test_rebuild_puts_back_identical_rows_once_and_writes_no_outbox(
    client: AsyncClient, db: AsyncSession, settings: Settings, visit: Visit, tmp_path: Path
) -> None:
    other = await _visit(db, settings, visit.study, visit.site, visit.modules)
    storage = LocalStorage(tmp_path)
    first = await _submit(client, visit)
    second = await _submit(client, visit, n_trials=7)
    third = await _submit(client, other)
    await archive_submission(db, storage, first)
    # The session ends between two archived submissions: the later snapshot must win.
    await db.execute(
        update(AssessmentSession)
        .where(AssessmentSession.id == visit.session.id)
        .values(
            status=SessionStatus.completed,
            client_ended_at=datetime.now(UTC),
            ended_at=datetime.now(UTC),
        )
    )
    await archive_submission(db, storage, second)
    await archive_submission(db, storage, third)
    before = await _rows(db, visit.study.id)
    assert (len(before["sessions"]), len(before["submissions"]), len(before["tasks"])) == (2, 3, 9)

    await _delete_submissions(db, visit.study.id)
    assert await _rows(db, visit.study.id) == {"sessions": [], "submissions": [], "tasks": []}
    outbox_before = await _count(db, OutboxEvent)

    report = await rebuild_study(db, storage, visit.study)

    assert report.ok and report.skipped == []
    assert (report.objects, report.restored, report.already_present) == (3, 3, 0)
    assert (report.sessions_created, report.tasks_created) == (2, 9)
    after = await _rows(db, visit.study.id)
    assert after == before
    statuses = {s["id"]: s["status"] for s in after["sessions"]}
    assert statuses[visit.session.id] == SessionStatus.completed
    assert await _count(db, OutboxEvent) == outbox_before

    again = await rebuild_study(db, storage, visit.study)
    assert again.ok
    assert (again.restored, again.already_present, again.sessions_created) == (0, 3, 0)
    assert again.tasks_created == 0
    assert await _rows(db, visit.study.id) == before
    assert await _count(db, OutboxEvent) == outbox_before

    # Whatever order the objects come in, the session ends up as its newest snapshot.
    await _delete_submissions(db, visit.study.id)
    backwards = await rebuild_study(db, ReversedListing(tmp_path), visit.study)
    assert (backwards.restored, backwards.sessions_created) == (3, 2)
    assert await _rows(db, visit.study.id) == before


async def test_rebuild_skips_and_reports_corrupt_objects(
    client: AsyncClient, db: AsyncSession, visit: Visit, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path)
    good = await _submit(client, visit)
    tampered = await _submit(client, visit)
    good_key = await archive_submission(db, storage, good)
    tampered_key = await archive_submission(db, storage, tampered)
    assert good_key is not None and tampered_key is not None

    # One trial's reaction time changed, checksum left as it was.
    document = orjson.loads(storage.get(tampered_key))
    payload = orjson.loads(base64.b64decode(document["payload_b64"]))
    payload["tasks"][0]["trials"][3]["rt_ms"] += 1
    document["payload_b64"] = base64.b64encode(orjson.dumps(payload)).decode()
    storage.put(tampered_key, orjson.dumps(document))
    # And something under the study's prefix that is no archive object at all.
    junk_key = f"studies/{visit.study.id}/participants/x/junk.json"
    storage.put(junk_key, b"not json")

    await _delete_submissions(db, visit.study.id)
    report = await rebuild_study(db, storage, visit.study)

    assert not report.ok
    assert report.restored == 1
    reasons = {s.key: s.reason for s in report.corrupt}
    assert set(reasons) == {tampered_key, junk_key}
    assert reasons[tampered_key] == "payload checksum does not match"
    assert reasons[junk_key].startswith("not an archive document")
    assert "1 restored" in report.summary() and "2 corrupt" in report.summary()
    ids = set((await db.execute(select(Submission.id))).scalars())
    assert good in ids and tampered not in ids


async def test_rebuild_reports_a_participant_it_cannot_find(
    client: AsyncClient, db: AsyncSession, visit: Visit, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path)
    submission_id = await _submit(client, visit)
    await archive_submission(db, storage, submission_id)
    await _delete_submissions(db, visit.study.id)
    await db.execute(
        update(Participant)
        .where(Participant.id == visit.participant.id)
        .values(participant_code="RENAMED"),
        execution_options={"synchronize_session": False},
    )

    report = await rebuild_study(db, storage, visit.study)

    assert (report.restored, len(report.corrupt), len(report.missing_reference)) == (0, 0, 1)
    assert "no participant" in report.missing_reference[0].reason
    assert not report.ok


@pytest.mark.slow
async def test_cli_rebuilds_a_committed_database(tmp_path: Path) -> None:
    name = f"metricis_archive_{uuid.uuid4().hex[:8]}"
    url = await create_database(name)
    try:
        # Alembic's env runs its own event loop, so it gets a thread of its own.
        await asyncio.to_thread(migrate, make_settings(url))
        engine = create_async_engine(url)
        try:
            storage = LocalStorage(tmp_path / "archive")
            async with AsyncSession(engine, expire_on_commit=False) as db:
                study = await factories.create_study(db)
                site = await factories.create_site(db, study)
                participant = await factories.create_participant(db, site)
                modules = await ingest.standard_modules(db)
                battery = await ingest.create_battery(db, study, modules)
                session = await ingest.start_session(db, participant, battery)
                submission_ids = []
                for n_trials in (10, 30):
                    body = ingest.payload(session.id, modules, n_trials=n_trials)
                    receipt, _ = await submissions_service.submit(
                        db,
                        participant=participant,
                        submission_in=SubmissionIn.model_validate(body),
                        payload=body,
                        raw=orjson.dumps(body),
                    )
                    submission_ids.append(receipt.submission_id)
                await db.commit()
                for submission_id in submission_ids:
                    assert await archive_submission(db, storage, submission_id) is not None
                before = await _rows(db, study.id)
                await _delete_submissions(db, study.id)
                await db.commit()

            env = {
                **os.environ,
                "ENVIRONMENT": "test",
                "DATABASE_URL": url,
                "JWT_SECRET_KEY": TEST_SECRET,
                "ARCHIVE_BACKEND": "local",
                "ARCHIVE_DIR": str(tmp_path / "archive"),
            }
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "server", "archive", "rebuild", "--study", study.code],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            first_line = done.stdout.splitlines()[0]
            assert first_line.startswith(f"study {study.code}: 2 archived submissions, 2 restored")
            assert "sessions_created: 1" in done.stdout

            async with AsyncSession(engine) as db:
                assert await _rows(db, study.id) == before
        finally:
            await engine.dispose()
    finally:
        await drop_database(name)


async def test_rebuild_brings_a_quarantined_submission_back_quarantined(
    client: AsyncClient, db: AsyncSession, visit: Visit, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path)
    good = await _submit(client, visit)
    body = ingest.payload(visit.session.id, visit.modules, n_trials=5)
    body["tasks"][1]["module_key"] = "not_in_the_battery"
    response = await client.post("/api/submit", json=body, headers=visit.headers)
    assert response.status_code == 202, response.text
    held = uuid.UUID(response.json()["submission_id"])
    await archive_submission(db, storage, good)
    await archive_submission(db, storage, held)
    before = await _rows(db, visit.study.id)
    await _delete_submissions(db, visit.study.id)

    report = await rebuild_study(db, storage, visit.study)

    assert report.ok and (report.restored, report.quarantined) == (2, 1)
    assert await _rows(db, visit.study.id) == before
    restored = await db.get(Submission, held)
    assert restored is not None and restored.status.value == "quarantined"
    assert restored.problems == response.json()["problems"]
