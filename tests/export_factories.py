"""A committed study to export: two sites, participants, the built-in battery, submissions
through /api/submit (scored as the worker would), and one quarantined submission."""

from __future__ import annotations

import asyncio
import io
import uuid
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from httpx import ASGITransport, AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.assessment_sessions.models import AssessmentSession
from server.cli import migrate
from server.core.config import Settings
from server.exports import build
from server.exports import service as exports_service
from server.exports.schemas import ExportCreate
from server.main import create_app
from server.modules.builtin import load_builtins
from server.studies.access import StudyAccess
from server.studies.models import Site, Study
from server.submissions import scoring_run
from server.submissions.models import Submission, SubmissionStatus
from tests import factories
from tests import ingest_factories as ingest
from tests import scoring_factories as sf
from tests.conftest import create_database, make_settings

SECRET = "exports-committed-" + "s" * 40


@dataclass
class Seeded:
    study: Study
    sites: list[Site]
    user_id: uuid.UUID
    submission_ids: list[uuid.UUID]
    quarantined_id: uuid.UUID


async def new_database() -> tuple[str, str]:
    name = f"metricis_exports_{uuid.uuid4().hex[:8]}"
    url = await create_database(name)
    await asyncio.to_thread(migrate, make_settings(url))
    return name, url


def settings_for(url: str) -> Settings:
    return make_settings(url, JWT_SECRET_KEY=SECRET)


async def seed(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> Seeded:
    device_headers: list[tuple[dict[str, str], AssessmentSession]] = []
    async with sessions() as db, db.begin():
        study = await factories.create_study(db)
        sites = [await factories.create_site(db, study, code=c) for c in ("LON", "NYC")]
        builtins = await load_builtins(db)
        battery = await ingest.create_battery(db, study, [builtins[k] for k in sf.BATTERY])
        user = await factories.create_user(db)
        for n in range(4):
            participant = await factories.create_participant(
                db, sites[n % 2], code=f"P-{n:03d}-{uuid.uuid4().hex[:4]}"
            )
            began = datetime(2026, 11, 1, 9, tzinfo=UTC) + timedelta(days=n)
            session = AssessmentSession(
                id=uuid.uuid4(), participant_id=participant.id, study_id=study.id,
                battery_id=battery.id, device={"model": "Pixel 8"}, app_version="2.4.1",
                client_started_at=began, started_at=began,
            )  # fmt: skip
            db.add(session)
            await db.flush()
            headers = await ingest.participant_headers(db, settings, participant)
            device_headers.append((headers, session))
    app = create_app(settings)
    ids = []
    try:
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://t") as http:
            for n, (headers, session) in enumerate(device_headers):
                tasks = [sf.clean_simple_rt(), sf.clean_cpt(), sf.mood([n % 4, 1, 2, 0, 3])]
                if n == 1:
                    # A client whose mean disagrees with the server's: a client column.
                    tasks[0]["summary"]["mean_rt_ms"] += 50.0
                body = sf.submission(session, tasks)
                response = await http.post("/api/submit", json=body, headers=headers)
                assert response.status_code == 201, response.text
                ids.append(uuid.UUID(response.json()["submission_id"]))
    finally:
        await app.state.engine.dispose()
    for submission_id in ids:
        async with sessions() as db, db.begin():
            await scoring_run.score_submission(db, submission_id)
    async with sessions() as db, db.begin():
        first = await db.get(Submission, ids[0])
        assert first is not None
        quarantined = Submission(
            id=uuid.uuid4(), client_submission_id="held", participant_id=first.participant_id,
            study_id=study.id, session_id=first.session_id, checksum="0" * 64,
            raw_payload=b"{}", status=SubmissionStatus.quarantined, problems=[],
        )  # fmt: skip
        db.add(quarantined)
    return Seeded(study, sites, user.id, ids, quarantined.id)


async def export_now(
    sessions: async_sessionmaker[AsyncSession],
    storage: Any,
    seeded: Seeded,
    request: ExportCreate,
) -> tuple[uuid.UUID, bytes]:
    """Create (as a whole-study admin would) and build at once; (export id, zip bytes)."""
    async with sessions() as db, db.begin():
        access = StudyAccess(study=seeded.study, role=None)
        export = await exports_service.create(
            db, access=access, user_id=seeded.user_id, request=request
        )
    key = await build.build(sessions, storage, export.id)
    return export.id, storage.get(key)


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}
