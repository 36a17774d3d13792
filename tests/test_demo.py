"""seed-demo into a fresh database: what a new user of `make run` finds in the demo study."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.archive.storage import LocalStorage
from server.assessment_sessions.models import AssessmentSession, SessionStatus
from server.cli import migrate
from server.core.config import Settings
from server.core.db import create_engine, create_sessionmaker
from server.demo import seed_demo
from server.demo.sessions import FLAGGED, QUARANTINED, WITHDRAWN
from server.exports import build
from server.exports import service as exports_service
from server.exports.schemas import ExportCreate
from server.outbox import service as outbox
from server.participants.models import Participant, ParticipantStatus
from server.reports.data import participant_data
from server.schedules import service as schedules_service
from server.schedules.models import VisitStatus
from server.scoring.models import QualityCheck, TaskScore
from server.studies.access import StudyAccess
from server.studies.models import Study
from server.submissions import scoring_run
from server.submissions.models import Submission, SubmissionStatus
from server.users.models import User
from tests.conftest import create_database, drop_database, make_settings

pytestmark = pytest.mark.slow


@pytest.fixture
async def fresh() -> AsyncIterator[Settings]:
    name = f"metricis_demo_{uuid.uuid4().hex[:8]}"
    url = await create_database(name)
    settings = make_settings(url)
    await asyncio.to_thread(migrate, settings)
    yield settings
    await drop_database(name)


async def _outbox(db: AsyncSession, topic: str) -> list[uuid.UUID]:
    rows = await db.execute(
        text("SELECT subject_id FROM outbox_events WHERE topic = :t ORDER BY created_at"),
        {"t": topic},
    )
    return [r[0] for r in rows]


async def test_the_demo_has_a_history_of_sessions_scored_by_the_worker_doors(
    fresh: Settings, tmp_path: object
) -> None:
    began = time.perf_counter()
    await seed_demo(fresh)
    seconds = time.perf_counter() - began
    assert seconds < 15, seconds  # a few seconds: make run waits for it
    await seed_demo(fresh, if_empty=True)  # a second make run leaves the demo as it is

    engine = create_engine(fresh)
    sessions = create_sessionmaker(engine)
    try:
        async with sessions() as db:
            people = {p.participant_code: p for p in (await db.scalars(select(Participant)))}
            counts = dict(
                (
                    await db.execute(
                        select(Participant.participant_code, func.count(AssessmentSession.id))
                        .outerjoin(AssessmentSession)
                        .group_by(Participant.participant_code)
                    )
                ).all()
            )
            # Most participants have several completed visits; the newest, none yet.
            assert sum(1 for n in counts.values() if n >= 2) >= 15
            assert counts["LON-020"] == 0
            assert sum(counts.values()) >= 40
            assert set(await db.scalars(select(AssessmentSession.status))) == {
                SessionStatus.completed
            }
            # Sessions are dated on their visits' days, in the past, by both clocks.
            now = datetime.now(UTC)
            for s in await db.scalars(select(AssessmentSession)):
                assert s.started_at < now and s.ended_at is not None and s.ended_at < now
                assert abs((s.started_at - s.client_started_at).total_seconds()) < 5

            # Visits: completed by those sessions, some missed, others ahead.
            statuses: list[VisitStatus] = []
            for p in people.values():
                schedule = await schedules_service.participant_schedule(db, participant_id=p.id)
                statuses += [o.status for o in schedule]
            assert statuses.count(VisitStatus.completed) == sum(counts.values())
            assert VisitStatus.missed in statuses and VisitStatus.upcoming in statuses

            # One submission is quarantined, with what its module refused; kept as sent.
            held = (
                await db.scalars(
                    select(Submission).where(Submission.status == SubmissionStatus.quarantined)
                )
            ).one()
            assert held.participant_id == people[QUARANTINED].id
            assert held.problems is not None
            assert held.problems[0]["module_key"] == "choice_rt"
            assert held.problems[0]["field"] == "trials[7].rt_ms"
            assert held.raw_payload
            accepted = await db.scalar(
                select(func.count()).where(Submission.status == SubmissionStatus.accepted)
            )
            assert accepted == sum(counts.values()) - 1

            # The withdrawn participant's data may not be used: exports leave it out.
            assert people[WITHDRAWN].status == ParticipantStatus.withdrawn
            data_use = await db.scalar(
                text("SELECT data_use FROM consent_withdrawals WHERE participant_id = :p"),
                {"p": people[WITHDRAWN].id},
            )
            assert data_use == "none"

            to_score = await _outbox(db, outbox.SCORING_SUBMISSION)
            to_check = await _outbox(db, outbox.SCORING_SESSION)
        assert len(to_score) == accepted and len(to_check) == sum(counts.values())

        # The worker's doors for those outbox rows (workers.tasks.scoring).
        for submission_id in to_score:
            async with sessions() as db, db.begin():
                await scoring_run.score_submission(db, submission_id)
        for session_id in to_check:
            async with sessions() as db, db.begin():
                await scoring_run.check_session(db, session_id)

        async with sessions() as db:
            scores = list(await db.scalars(select(TaskScore)))
            tasks = await db.scalar(text("SELECT count(*) FROM submission_tasks"))
            assert len(scores) == tasks
            # The app's summaries agree with the server's scoring.
            assert all(s.n_mismatches == 0 for s in scores), [
                (s.module_key, s.comparison) for s in scores if s.n_mismatches
            ]
            assert {s.module_key for s in scores} == {
                "simple_rt", "choice_rt", "cpt", "digit_span", "mood9"
            }  # fmt: skip
            fired = (
                await db.execute(
                    select(Participant.participant_code, QualityCheck.rule)
                    .join(AssessmentSession, AssessmentSession.id == QualityCheck.session_id)
                    .join(Participant, Participant.id == AssessmentSession.participant_id)
                    .where(QualityCheck.fired.is_(True))
                )
            ).all()
            flagged = {rule for code, rule in fired if code == FLAGGED}
            assert {"anticipations", "focus_loss"} <= flagged
            assert (QUARANTINED, "incomplete_battery") in fired
            # The rest is a clean study: a stray flag (a CPT with a few misses) at most.
            flagged_sessions = {
                session_id
                for (session_id,) in (
                    await db.execute(
                        select(QualityCheck.session_id).where(QualityCheck.fired.is_(True))
                    )
                ).all()
            }
            assert len(flagged_sessions) <= 2 + len(to_check) // 10, fired

            # A participant's report: their four visits on their days, each with its scores.
            first = people["NYC-001"]
            report = await participant_data(db, study_id=first.study_id, participant_id=first.id)
            assert report is not None and report.scheduled
            assert [v.label for v in report.visits] == ["Baseline", "Week 1", "Week 4", "Week 12"]
            done = [v for v in report.visits if v.status == VisitStatus.completed]
            assert len(done) >= 3
            assert all("simple_rt" in v.scores and "cpt" in v.scores for v in done)
            assert len({v.when.date() for v in done}) == len(done)

        # An export of the whole study, as the demo admin asks for one: trials of every
        # module, and the withdrawn participant's submissions left out by their choice.
        async with sessions() as db, db.begin():
            study = (await db.scalars(select(Study))).one()
            admin = (await db.scalars(select(User).where(User.is_admin.is_(True)))).one()
            export = await exports_service.create(
                db,
                access=StudyAccess(study=study, role=None),
                user_id=admin.id,
                request=ExportCreate(formats=["csv"]),
            )
            withdrawn_accepted = await db.scalar(
                select(func.count()).where(
                    Submission.participant_id == people[WITHDRAWN].id,
                    Submission.status == SubmissionStatus.accepted,
                )
            )
        storage = LocalStorage(tmp_path)  # type: ignore[arg-type]
        key = await build.build(sessions, storage, export.id)
        with zipfile.ZipFile(io.BytesIO(storage.get(key))) as archive:
            files = {name: archive.read(name) for name in archive.namelist()}
        manifest = json.loads(files["manifest.json"])
        assert manifest["excluded"] == {"withdrawn: no data may be used": withdrawn_accepted}
        assert len(manifest["submissions"]) == (accepted or 0) - (withdrawn_accepted or 0)
        for module in ("simple_rt", "choice_rt", "cpt", "digit_span", "mood9"):
            rows = files[f"trials_{module}_v1.csv"].decode().splitlines()
            assert len(rows) > 100, module
            assert not any(WITHDRAWN in row for row in rows)
    finally:
        await engine.dispose()
