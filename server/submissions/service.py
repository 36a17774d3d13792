"""The ingest path: validate, store in one transaction with its outbox rows, answer a receipt.

Written with Core statements: a submission is four or five round trips, whatever its size.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import orjson
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.assessment_sessions.models import AssessmentSession
from server.batteries.models import BatteryModule
from server.core.errors import Conflict, NotFound, Unprocessable
from server.core.models import utcnow
from server.modules.models import Module
from server.outbox import service as outbox
from server.participant_auth.deps import ParticipantCredentials
from server.participants.schemas import ParticipantRef
from server.submissions import store, validation
from server.submissions.models import Submission, SubmissionTask
from server.submissions.schemas import Receipt, SubmissionIn, SubmissionRead, TaskRead

log = structlog.get_logger(__name__)

_SESSION_CACHE_SIZE = 10_000
_session_owner: dict[uuid.UUID, tuple[uuid.UUID, uuid.UUID]] = {}
# Published batteries never change, so their compiled modules are kept per process.
_battery_modules: dict[uuid.UUID, dict[tuple[str, int], validation.CompiledModule]] = {}


def checksum(payload: Any) -> str:
    """SHA-256 of the canonical JSON: the same data gives the same checksum, however sent."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


async def modules_of_battery(
    db: AsyncSession, battery_id: uuid.UUID
) -> dict[tuple[str, int], validation.CompiledModule]:
    cached = _battery_modules.get(battery_id)
    if cached is not None:
        return cached
    rows = await db.execute(
        select(Module)
        .join(BatteryModule, BatteryModule.module_id == Module.id)
        .where(BatteryModule.battery_id == battery_id)
    )
    modules = {
        (m.key, m.version): validation.compile_module(
            m.id, m.key, m.version, m.trial_schema, m.summary_schema, m.metrics
        )
        for m in rows.scalars()
    }
    _battery_modules[battery_id] = modules
    return modules


def validate_or_raise(
    submission_in: SubmissionIn, modules: dict[tuple[str, int], validation.CompiledModule]
) -> None:
    problems = validation.check_tasks(submission_in.tasks, modules)
    if problems:
        raise Unprocessable("The submission does not match its modules.", details=problems)


async def _session_battery(
    db: AsyncSession, *, participant_id: uuid.UUID, session_id: uuid.UUID
) -> uuid.UUID:
    # A session's participant and battery never change: remember them, skip a round trip.
    known = _session_owner.get(session_id)
    if known is not None and known[0] == participant_id:
        return known[1]
    row = (
        await db.execute(
            select(AssessmentSession.participant_id, AssessmentSession.battery_id).where(
                AssessmentSession.id == session_id
            )
        )
    ).one_or_none()
    if row is None or row[0] != participant_id:
        raise NotFound(
            "No such session: start it before submitting.",
            details=[{"loc": ["body", "session_id"], "msg": "unknown session"}],
        )
    if len(_session_owner) >= _SESSION_CACHE_SIZE:
        _session_owner.pop(next(iter(_session_owner)))
    _session_owner[session_id] = (row[0], row[1])
    return row[1]


async def _existing(
    db: AsyncSession, *, participant_id: uuid.UUID, client_submission_id: str
) -> Receipt:
    row = (
        await db.execute(
            select(
                Submission.id, Submission.session_id, Submission.checksum, Submission.received_at
            ).where(
                Submission.participant_id == participant_id,
                Submission.client_submission_id == client_submission_id,
            )
        )
    ).one()
    return Receipt(
        submission_id=row.id,
        client_submission_id=client_submission_id,
        session_id=row.session_id,
        checksum=row.checksum,
        received_at=row.received_at,
    )


async def submit(
    db: AsyncSession,
    *,
    participant: ParticipantRef,
    submission_in: SubmissionIn,
    payload: Any,
    raw: bytes,
) -> tuple[Receipt, bool]:
    """Store a submission once. Returns (receipt, created); a replay returns the first receipt."""
    return await _submit(
        db,
        participant_id=participant.id,
        study_id=participant.study_id,
        login_id=None,
        submission_in=submission_in,
        payload=payload,
        raw=raw,
    )


async def submit_with_login_check(
    db: AsyncSession,
    *,
    token: ParticipantCredentials,
    submission_in: SubmissionIn,
    payload: Any,
    raw: bytes,
) -> tuple[Receipt, bool]:
    """submit, for a token whose login is checked by the insert itself: one round trip for
    both, and a login that has ended answers 401 having written nothing."""
    return await _submit(
        db,
        participant_id=token.participant_id,
        study_id=None,
        login_id=token.login_id,
        submission_in=submission_in,
        payload=payload,
        raw=raw,
    )


async def _submit(
    db: AsyncSession,
    *,
    participant_id: uuid.UUID,
    study_id: uuid.UUID | None,
    login_id: uuid.UUID | None,
    submission_in: SubmissionIn,
    payload: Any,
    raw: bytes,
) -> tuple[Receipt, bool]:
    battery_id = await _session_battery(
        db, participant_id=participant_id, session_id=submission_in.session_id
    )
    modules = await modules_of_battery(db, battery_id)
    validate_or_raise(submission_in, modules)
    digest = checksum(payload)
    submission_id = uuid.uuid4()
    new = store.NewSubmission(
        id=submission_id,
        client_submission_id=submission_in.client_submission_id,
        participant_id=participant_id,
        study_id=study_id,
        session_id=submission_in.session_id,
        checksum=digest,
        raw_payload=raw,
        received_at=utcnow(),
        tasks=[
            (
                modules[(t.module_key, t.module_version)].module_id,
                t.module_key,
                t.module_version,
                t.summary,
                t.trials,
            )
            for t in submission_in.tasks
        ],
        events=[
            outbox.Event(topic, {"submission_id": str(submission_id)}, submission_id)
            for topic in (
                outbox.ARCHIVE_SUBMISSION,
                outbox.REDCAP_SYNC_SUBMISSION,
                outbox.SCORING_SUBMISSION,
            )
        ],
    )
    if login_id is None:
        inserted = await store.insert_once(db, new)
    else:
        inserted = await store.insert_once_if_live(db, new, login_id)
    if not inserted:
        existing = await _existing(
            db,
            participant_id=participant_id,
            client_submission_id=submission_in.client_submission_id,
        )
        if existing.checksum != digest or existing.session_id != submission_in.session_id:
            raise Conflict(
                "This submission id was already used for different data.",
                error_code="idempotency_conflict",
                details={"client_submission_id": submission_in.client_submission_id},
            )
        return existing, False
    return (
        Receipt(
            submission_id=submission_id,
            client_submission_id=submission_in.client_submission_id,
            session_id=submission_in.session_id,
            checksum=digest,
            received_at=new.received_at,
        ),
        True,
    )


async def get(db: AsyncSession, submission_id: uuid.UUID) -> SubmissionRead:
    submission = await db.get(Submission, submission_id)
    if submission is None:
        raise NotFound("No such submission.")
    tasks = (
        await db.execute(
            select(SubmissionTask)
            .where(SubmissionTask.submission_id == submission_id)
            .order_by(SubmissionTask.position)
        )
    ).scalars()
    return SubmissionRead(
        submission_id=submission.id,
        client_submission_id=submission.client_submission_id,
        session_id=submission.session_id,
        checksum=submission.checksum,
        received_at=submission.received_at,
        participant_id=submission.participant_id,
        study_id=submission.study_id,
        tasks=[
            TaskRead(
                position=t.position,
                module_key=t.module_key,
                module_version=t.module_version,
                n_trials=t.n_trials,
                summary=t.summary,
                trials=t.trials,
            )
            for t in tasks
        ],
    )
