"""The submission archive: every acknowledged submission as one self-contained JSON object.

An object holds the raw payload exactly as received (base64) with the ids, codes and session
facts needed to put it back into an empty database (see server.archive.rebuild). Run by the
worker tier for `archive.submission` outbox rows, never in the request path.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from datetime import datetime
from typing import Any

import orjson
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.archive.storage import ObjectNotFound, ObjectStorage
from server.assessment_sessions.models import AssessmentSession
from server.batteries.models import Battery
from server.participants.models import Participant
from server.studies.models import Site, Study
from server.submissions.models import Submission

log = structlog.get_logger(__name__)

FORMAT = "metricis.submission/1"


def study_prefix(study_id: uuid.UUID) -> str:
    return f"studies/{study_id}/"


def archive_key(
    study_id: uuid.UUID,
    participant_id: uuid.UUID,
    session_id: uuid.UUID,
    submission_id: uuid.UUID,
) -> str:
    """The one place a submission is archived: ids only, so it never changes."""
    return (
        f"{study_prefix(study_id)}participants/{participant_id}"
        f"/sessions/{session_id}/submissions/{submission_id}.json"
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def build_document(
    *,
    submission: Submission,
    session: AssessmentSession,
    participant_code: str,
    study_code: str,
    site_code: str,
    battery_key: str,
    battery_version: int,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "submission": {
            "id": str(submission.id),
            "client_submission_id": submission.client_submission_id,
            "participant_id": str(submission.participant_id),
            "participant_code": participant_code,
            "study_id": str(submission.study_id),
            "study_code": study_code,
            "site_code": site_code,
            "session": {
                "id": str(session.id),
                "battery_id": str(session.battery_id),
                "battery_key": battery_key,
                "battery_version": battery_version,
                "status": session.status.value,
                "device": session.device,
                "app_version": session.app_version,
                "client_started_at": _iso(session.client_started_at),
                "started_at": _iso(session.started_at),
                "client_ended_at": _iso(session.client_ended_at),
                "ended_at": _iso(session.ended_at),
            },
            "checksum": submission.checksum,
            "received_at": _iso(submission.received_at),
        },
        "payload_b64": base64.b64encode(submission.raw_payload).decode("ascii"),
    }


def _already_archived(existing: bytes, submission: Submission) -> bool:
    """True when the stored object holds this submission's checksum and exact bytes."""
    try:
        document = orjson.loads(existing)
        stored = document["submission"]["checksum"]
        raw = base64.b64decode(document["payload_b64"], validate=True)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error):
        return False
    return bool(stored == submission.checksum and raw == submission.raw_payload)


async def archive_submission(
    db: AsyncSession, storage: ObjectStorage, submission_id: uuid.UUID
) -> str | None:
    """Write the submission's archive object once; returns its key, or None if the row is gone.

    Idempotent: an object already holding the same checksum and bytes is left untouched. One
    that differs (damaged, or written by hand) is replaced from the database, with a warning.
    """
    row = (
        await db.execute(
            select(
                Submission,
                AssessmentSession,
                Participant.participant_code,
                Study.code,
                Site.code,
                Battery.key,
                Battery.version,
            )
            .join(AssessmentSession, AssessmentSession.id == Submission.session_id)
            .join(Participant, Participant.id == Submission.participant_id)
            .join(Study, Study.id == Submission.study_id)
            .join(Site, Site.id == Participant.site_id)
            .join(Battery, Battery.id == AssessmentSession.battery_id)
            .where(Submission.id == submission_id)
        )
    ).one_or_none()
    if row is None:
        log.info("archive_submission_gone", submission_id=str(submission_id))
        return None
    submission, session, participant_code, study_code, site_code, battery_key, battery_version = row
    key = archive_key(submission.study_id, submission.participant_id, session.id, submission.id)

    try:
        existing: bytes | None = await asyncio.to_thread(storage.get, key)
    except ObjectNotFound:
        existing = None
    if existing is not None:
        if _already_archived(existing, submission):
            return key
        log.warning("archive_object_differs_rewritten", key=key)

    document = build_document(
        submission=submission,
        session=session,
        participant_code=participant_code,
        study_code=study_code,
        site_code=site_code,
        battery_key=battery_key,
        battery_version=battery_version,
    )
    await asyncio.to_thread(storage.put, key, orjson.dumps(document))
    log.info("submission_archived", key=key, bytes=len(submission.raw_payload))
    return key
