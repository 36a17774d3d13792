"""Where a submission's sync goes (the participant's site connection, else the study's), what
its state is before anything is sent, and resync (failed states back to pending)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.core.crypto import SecretUnreadable
from server.core.errors import Conflict, NotFound
from server.outbox import service as outbox
from server.participants.models import Participant
from server.redcap import service
from server.redcap.client import RedcapClient, client_for
from server.redcap.errors import RedcapRejected
from server.redcap.models import RedcapConnection, RedcapMapping, RedcapSyncState, SyncStatus
from server.redcap.plan import Plan
from server.submissions.models import Submission, SubmissionStatus

log = structlog.get_logger(__name__)


@dataclass
class SyncOutcome:
    submission_id: uuid.UUID
    # synced | failed | skipped | pending (deferred) | missing (the submission is gone)
    # | quarantined (held back until a reprocess accepts it: nothing sent)
    status: str
    connection_id: uuid.UUID | None = None
    batch: int = 0  # submissions in the batch sent (this one included)
    synced: int = 0
    failed: int = 0
    calls: int = 0  # import calls made (the backlog's too)
    error: str | None = None
    backlog_batches: int = 0  # further batches of the connection sent after this one's


def expire_states(db: AsyncSession, submission_ids: set[uuid.UUID]) -> None:
    """Whatever the caller's session holds of these states is out of date now."""
    identity_map = db.sync_session.identity_map
    for key in list(identity_map.keys()):
        # By identity key: reading an attribute of an expired object would load it.
        if key[0] is RedcapSyncState and key[1][0] in submission_ids:
            obj = identity_map.get(key)
            if obj is not None:
                db.expire(obj)


async def _set_state(
    session: AsyncSession,
    *,
    submission_id: uuid.UUID,
    study_id: uuid.UUID,
    connection_id: uuid.UUID | None,
    status: SyncStatus,
    error: str | None,
) -> None:
    existing = await session.scalar(
        select(RedcapSyncState.submission_id).where(RedcapSyncState.submission_id == submission_id)
    )
    if existing is None:
        session.add(
            RedcapSyncState(
                submission_id=submission_id,
                study_id=study_id,
                connection_id=connection_id,
                status=status,
                error=error,
            )
        )
    else:
        await session.execute(
            update(RedcapSyncState)
            .where(RedcapSyncState.submission_id == submission_id)
            .values(connection_id=connection_id, status=status, error=error, error_field=None)
            .execution_options(synchronize_session=False)
        )
    await session.flush()


@dataclass
class Route:
    """What routing decided: an outcome already, or the connection to send through."""

    outcome: SyncOutcome | None = None
    plan: Plan | None = None
    client: RedcapClient | None = None


async def route(session: AsyncSession, settings: Settings, submission_id: uuid.UUID) -> Route:
    found = (
        await session.execute(
            select(Submission.study_id, Participant.site_id, Submission.status)
            .join(Participant, Participant.id == Submission.participant_id)
            .where(Submission.id == submission_id)
        )
    ).one_or_none()
    if found is None:
        return Route(SyncOutcome(submission_id, "missing"))
    study_id, site_id, submission_status = found
    if submission_status == SubmissionStatus.quarantined:
        # Its release writes the sync's outbox row; a task that reaches it before (by hand,
        # or a row written by older code) sends nothing and records nothing.
        return Route(SyncOutcome(submission_id, "quarantined"))
    current = (
        await session.execute(
            select(RedcapSyncState.status, RedcapSyncState.connection_id).where(
                RedcapSyncState.submission_id == submission_id
            )
        )
    ).one_or_none()
    if current is not None and current[0] in (SyncStatus.synced, SyncStatus.failed):
        return Route(SyncOutcome(submission_id, str(current[0]), connection_id=current[1]))
    skipped_before = current is not None and current[0] == SyncStatus.skipped

    connection = await service.connection_for(session, study_id=study_id, site_id=site_id)
    mapping = await session.get(RedcapMapping, connection.id) if connection is not None else None
    if connection is None or not connection.enabled or mapping is None:
        if connection is None:
            reason = "No REDCap connection for this study or this participant's site."
        elif not connection.enabled:
            reason = "The REDCap connection is disabled."
        else:
            reason = "The REDCap connection has no field mapping."
        connection_id = connection.id if connection is not None else None
        await _set_state(
            session,
            submission_id=submission_id,
            study_id=study_id,
            connection_id=connection_id,
            status=SyncStatus.skipped,
            error=reason,
        )
        return Route(SyncOutcome(submission_id, "skipped", connection_id, error=reason))
    try:
        client = client_for(connection, settings, interactive=False)
    except (SecretUnreadable, RedcapRejected) as exc:
        # Nothing can be sent until someone enters the token again; then resync.
        await _set_state(
            session,
            submission_id=submission_id,
            study_id=study_id,
            connection_id=connection.id,
            status=SyncStatus.failed,
            error=exc.message,
        )
        return Route(SyncOutcome(submission_id, "failed", connection.id, error=exc.message))
    if skipped_before:
        # Skipped when it had no way to REDCap; it has one now: pending, sent in its turn.
        await _set_state(
            session,
            submission_id=submission_id,
            study_id=study_id,
            connection_id=connection.id,
            status=SyncStatus.pending,
            error=None,
        )
    plan = Plan(
        connection_id=connection.id,
        study_id=study_id,
        site_id=connection.site_id,
        batch_size=max(1, connection.batch_size),
        document=dict(mapping.document),
        mapping_version=_version(mapping.validated_at, connection.updated_at),
    )
    return Route(plan=plan, client=client)


def _version(validated_at: datetime, updated_at: datetime) -> str:
    return f"{validated_at.isoformat()}/{updated_at.isoformat()}"


async def current_plan(session: AsyncSession, plan: Plan) -> Plan:
    """The plan with the mapping as saved now. A task routes before it waits for its
    connection's sender lock: a mapping saved meanwhile (a REDCap push after a mapping change
    waits for the lock too, then puts its states back to pending) is the one its batches are
    built with, not the one it read before. A mapping gone meanwhile: the plan as it was (the
    next task's routing skips what it cannot send)."""
    row = (
        await session.execute(
            select(
                RedcapMapping.document,
                RedcapMapping.validated_at,
                RedcapConnection.updated_at,
                RedcapConnection.batch_size,
            )
            .join(RedcapConnection, RedcapConnection.id == RedcapMapping.connection_id)
            .where(RedcapMapping.connection_id == plan.connection_id)
        )
    ).one_or_none()
    if row is None or _version(row.validated_at, row.updated_at) == plan.mapping_version:
        return plan
    return replace(
        plan,
        document=dict(row.document),
        mapping_version=_version(row.validated_at, row.updated_at),
        batch_size=max(1, row.batch_size),
    )


# ----- resync ----------------------------------------------------------------------------------
async def resync(
    db: AsyncSession, connection_id: uuid.UUID, submission_id: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """Failed states of a connection back to pending, each with a new outbox row (one
    transaction: the caller's). With a submission id, that one only (404 / 409 otherwise)."""
    statement = (
        update(RedcapSyncState)
        .where(
            RedcapSyncState.connection_id == connection_id,
            RedcapSyncState.status == SyncStatus.failed,
        )
        .values(status=SyncStatus.pending, error=None, error_field=None, last_attempt_at=None)
        .returning(RedcapSyncState.submission_id, RedcapSyncState.study_id)
        .execution_options(synchronize_session=False)
    )
    if submission_id is not None:
        statement = statement.where(RedcapSyncState.submission_id == submission_id)
    rows = (await db.execute(statement)).all()
    reset = [row[0] for row in rows]
    if submission_id is not None and not reset:
        status = await db.scalar(
            select(RedcapSyncState.status).where(
                RedcapSyncState.submission_id == submission_id,
                RedcapSyncState.connection_id == connection_id,
            )
        )
        if status is None:
            raise NotFound("This connection has no sync state for that submission.")
        raise Conflict(
            f"This submission's sync is {status}, not failed.",
            error_code="sync_not_failed",
        )
    await outbox.add(
        db,
        [
            outbox.Event(outbox.REDCAP_SYNC_SUBMISSION, {"submission_id": str(i)}, i, study)
            for i, study in rows
        ],
    )
    expire_states(db, set(reset))
    log.info("redcap_resync", connection_id=str(connection_id), reset=len(reset))
    return reset
