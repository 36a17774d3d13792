"""Offline sync: each queued item on its own, idempotently; one bad item blocks nothing."""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from server.assessment_sessions import service as sessions_service
from server.assessment_sessions.schemas import SessionEnd, SessionStart
from server.core.errors import AppError
from server.participants.schemas import ParticipantRef
from server.submissions import service as submissions_service
from server.submissions.body import parse_model
from server.submissions.models import SubmissionStatus
from server.submissions.schemas import SubmissionIn
from server.sync.schemas import ItemError, ItemResult, SyncIn, SyncResult

log = structlog.get_logger(__name__)


async def _apply(
    db: AsyncSession, participant: ParticipantRef, index: int, kind: str, data: dict[str, Any]
) -> ItemResult:
    loc = ("body", "items", index, "data")
    if kind == "session_start":
        session, created = await sessions_service.start(
            db, participant=participant, session_in=parse_model(SessionStart, data, loc)
        )
        return ItemResult(
            index=index, type=kind, status="stored" if created else "duplicate", id=str(session.id)
        )
    if kind == "session_end":
        session, ended = await sessions_service.end(
            db, participant=participant, end_in=parse_model(SessionEnd, data, loc)
        )
        # An end the session already had is a replay: nothing was stored this time.
        return ItemResult(
            index=index, type=kind, status="stored" if ended else "duplicate", id=str(session.id)
        )
    submission_in = parse_model(SubmissionIn, data, loc)
    receipt, created = await submissions_service.submit(
        db,
        participant=participant,
        submission_in=submission_in,
        payload=data,
        raw=orjson.dumps(data),
    )
    quarantined = receipt.status == SubmissionStatus.quarantined
    return ItemResult(
        index=index,
        type=kind,
        status=("quarantined" if quarantined else "stored") if created else "duplicate",
        id=str(receipt.submission_id),
        result=receipt.model_dump(mode="json"),
    )


async def sync(db: AsyncSession, *, participant: ParticipantRef, sync_in: SyncIn) -> SyncResult:
    results: list[ItemResult] = []
    for index, item in enumerate(sync_in.items):
        # A savepoint per item: a rejected item is undone alone, the others stay.
        savepoint = await db.begin_nested()
        try:
            result = await _apply(db, participant, index, item.type, item.data)
        except AppError as exc:
            await savepoint.rollback()
            result = ItemResult(
                index=index,
                type=item.type,
                status="rejected",
                error=ItemError(
                    error_code=exc.error_code, message=exc.message, details=exc.details
                ),
            )
        else:
            await savepoint.commit()
        results.append(result)
    counts = {
        s: sum(1 for r in results if r.status == s)
        for s in ("stored", "quarantined", "duplicate", "rejected")
    }
    log.info("sync_processed", participant_id=str(participant.id), **counts)
    return SyncResult(items=results, **counts)
