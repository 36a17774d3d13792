"""Exports honour withdrawal: a participant who withdrew is left out, or cut at their
withdrawal, as their recorded data-use choice says; the manifest counts who was left out
and why, never who. And each session's row names the visit it was for."""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta

import pandas as pd
import pytest

from server.archive.storage import LocalStorage
from server.assessment_sessions.models import AssessmentSession
from server.batteries.models import Battery
from server.consent.models import ConsentWithdrawal, DataUse
from server.core.db import create_engine, create_sessionmaker
from server.exports.schemas import ExportCreate
from server.participants.models import Participant, ParticipantStatus
from server.submissions.models import Submission
from tests import export_factories as ef
from tests import schedule_factories as sched
from tests.conftest import drop_database

pytestmark = pytest.mark.slow


async def test_withdrawn_participants_are_left_out_as_their_consent_says(
    tmp_path: object,
) -> None:
    name, url = await ef.new_database()
    settings = ef.settings_for(url)
    engine = create_engine(settings)
    sessions = create_sessionmaker(engine)
    try:
        seeded = await ef.seed(sessions, settings)
        ids = seeded.submission_ids
        # Participant of submission 1: no data may be used. Of 2: data until withdrawal, and
        # they withdrew after it arrived (kept). Of 3: until withdrawal, but it arrived after.
        # Of 0: re-enrolled by staff after a withdrawal with "none" (their new consent holds).
        choices = {
            ids[1]: (DataUse.none, timedelta(hours=1), ParticipantStatus.withdrawn),
            ids[2]: (DataUse.until_withdrawal, timedelta(hours=1), ParticipantStatus.withdrawn),
            ids[3]: (DataUse.until_withdrawal, -timedelta(hours=1), ParticipantStatus.withdrawn),
            ids[0]: (DataUse.none, timedelta(hours=1), ParticipantStatus.active),
        }
        async with sessions() as db, db.begin():
            for submission_id, (use, after, status) in choices.items():
                submission = await db.get_one(Submission, submission_id)
                participant = await db.get_one(Participant, submission.participant_id)
                participant.status = status
                db.add(
                    ConsentWithdrawal(
                        participant_id=participant.id, study_id=participant.study_id,
                        withdrawn_at=submission.received_at + after, reason="test",
                        data_use=use, previous_status="active",
                    )
                )  # fmt: skip
        storage = LocalStorage(tmp_path)  # type: ignore[arg-type]
        _, data = await ef.export_now(sessions, storage, seeded, ExportCreate(formats=["csv"]))
        manifest = json.loads(ef.members(data)["manifest.json"])
        listed = {uuid.UUID(s["id"]) for s in manifest["submissions"]}
        assert listed == {ids[0], ids[2]}
        assert manifest["excluded"] == {
            "withdrawn: no data may be used": 1,
            "withdrawn: received after withdrawal": 1,
        }
        assert "P-" not in json.dumps(manifest["excluded"])
    finally:
        await engine.dispose()
        await drop_database(name)


async def test_each_row_names_the_visit_its_session_was_for(tmp_path: object) -> None:
    name, url = await ef.new_database()
    settings = ef.settings_for(url)
    engine = create_engine(settings)
    sessions = create_sessionmaker(engine)
    try:
        seeded = await ef.seed(sessions, settings)
        async with sessions() as db, db.begin():
            submission = await db.get_one(Submission, seeded.submission_ids[0])
            session = await db.get_one(AssessmentSession, submission.session_id)
            participant = await db.get_one(Participant, submission.participant_id)
            battery = await db.get_one(Battery, session.battery_id)
            protocol, visits = await sched.create_protocol(db, seeded.study, battery)
            occurrence = await sched.create_occurrence(db, participant, protocol, visits[1])
            session.visit_occurrence_id = occurrence.id
        storage = LocalStorage(tmp_path)  # type: ignore[arg-type]
        _, data = await ef.export_now(sessions, storage, seeded, ExportCreate(formats=["csv"]))
        files = ef.members(data)
        table = pd.read_csv(io.BytesIO(files["sessions.csv"]), dtype=str, keep_default_na=False)
        visits_by_session = dict(zip(table["session_id"], table["visit"], strict=True))
        assert visits_by_session.pop(str(session.id)) == "week1"
        assert set(visits_by_session.values()) == {""}
        trials = pd.read_csv(
            io.BytesIO(files["trials_simple_rt_v1.csv"]), dtype=str, keep_default_na=False
        )
        assert set(trials[trials["session_id"] == str(session.id)]["visit"]) == {"week1"}
    finally:
        await engine.dispose()
        await drop_database(name)
