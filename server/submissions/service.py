"""The ingest path: validate, store in one transaction with its outbox rows, answer a receipt.

Whatever its tasks' problems, a submission for the participant's own session is stored: with
none it is accepted, with some it is quarantined (see models.SubmissionStatus) and a
coordinator reprocesses it later (server.submissions.quarantine).

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
from server.core.errors import Conflict, NotFound
from server.core.models import utcnow
from server.modules.models import Module
from server.outbox import service as outbox
from server.participant_auth.deps import ParticipantCredentials
from server.participants.schemas import ParticipantRef
from server.submissions import store, validation
from server.submissions.models import Submission, SubmissionStatus
from server.submissions.schemas import Receipt, SubmissionIn

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
            m.id, m.key, m.version, m.trial_schema, m.summary_schema
        )
        for m in rows.scalars()
    }
    _battery_modules[battery_id] = modules
    return modules


# The outbox topics a submission emits, by its status: the one list, read by ingest and by the
# release of a quarantined submission (release_events). A quarantined one is archived at once
# (its raw data kept off the database too) and owes the rest until it is accepted.
TOPICS: dict[SubmissionStatus, tuple[str, ...]] = {
    SubmissionStatus.accepted: (
        outbox.ARCHIVE_SUBMISSION,
        outbox.REDCAP_SYNC_SUBMISSION,
        outbox.SCORING_SUBMISSION,
    ),
    SubmissionStatus.quarantined: (outbox.ARCHIVE_SUBMISSION,),
}


def outbox_events(submission_id: uuid.UUID, status: SubmissionStatus) -> list[outbox.Event]:
    payload = {"submission_id": str(submission_id)}
    return [outbox.Event(topic, payload, submission_id) for topic in TOPICS[status]]


def release_events(submission_id: uuid.UUID, study_id: uuid.UUID) -> list[outbox.Event]:
    """What a quarantined submission still owes once accepted: the accepted topics it did not
    emit when it was stored (sent once, never twice), as jobs of its study."""
    sent = set(TOPICS[SubmissionStatus.quarantined])
    return [
        outbox.Event(e.topic, e.payload, e.subject_id, study_id)
        for e in outbox_events(submission_id, SubmissionStatus.accepted)
        if e.topic not in sent
    ]


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
                Submission.id,
                Submission.session_id,
                Submission.checksum,
                Submission.received_at,
                Submission.status,
                Submission.problems,
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
        status=row.status,
        problems=row.problems or [],
    )


async def submit(
    db: AsyncSession,
    *,
    participant: ParticipantRef,
    submission_in: SubmissionIn,
    payload: Any,
    raw: bytes,
) -> tuple[Receipt, bool]:
    """Store a submission once, accepted or quarantined. Returns (receipt, created); a replay
    returns the receipt as the submission stands (quarantined, or accepted since)."""
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
    problems = validation.check_tasks(submission_in.tasks, modules)
    status = SubmissionStatus.quarantined if problems else SubmissionStatus.accepted
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
        status=status,
        problems=problems or None,
        tasks=[]
        if problems
        else [
            (
                modules[(t.module_key, t.module_version)].module_id,
                t.module_key,
                t.module_version,
                t.summary,
                t.trials,
            )
            for t in submission_in.tasks
        ],
        events=outbox_events(submission_id, status),
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
    if problems:
        # Counts and rule names only: a problem's message may quote what the device sent.
        log.info(
            "submission_quarantined",
            submission_id=str(submission_id),
            problems=len(problems),
            rules=sorted({p["rule"] for p in problems}),
        )
    return (
        Receipt(
            submission_id=submission_id,
            client_submission_id=submission_in.client_submission_id,
            session_id=submission_in.session_id,
            checksum=digest,
            received_at=new.received_at,
            status=status,
            problems=problems,
        ),
        True,
    )
