"""An archive object read back, and verified before a rebuild may use it.

The document's shape as server.archive.service writes it, parsed strictly. Verifying
recomputes the payload's checksum from its bytes, which must match the document's, and
checks that the object sits under the key its own ids give and belongs to the study being
rebuilt. A corrupt object raises CorruptObject naming what is wrong: the rebuild skips and
reports it, never half-restores it.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import AwareDatetime, BaseModel, ValidationError

from server.archive.service import FORMAT, archive_key
from server.assessment_sessions.models import SessionStatus
from server.submissions import service as submissions_service
from server.submissions.schemas import SubmissionIn


class SessionDoc(BaseModel):
    """The session as it stood when the submission was archived."""

    id: uuid.UUID
    battery_id: uuid.UUID
    battery_key: str
    battery_version: int
    status: SessionStatus
    device: dict[str, Any]
    app_version: str
    client_started_at: AwareDatetime
    started_at: AwareDatetime
    client_ended_at: AwareDatetime | None
    ended_at: AwareDatetime | None


class SubmissionDoc(BaseModel):
    """The submission's facts: its ids, and the codes a rebuild finds its references by."""

    id: uuid.UUID
    client_submission_id: str
    participant_id: uuid.UUID
    participant_code: str
    study_id: uuid.UUID
    study_code: str
    site_code: str
    session: SessionDoc
    checksum: str
    received_at: AwareDatetime


class _Document(BaseModel):
    format: str
    submission: SubmissionDoc
    payload_b64: str


@dataclass(frozen=True)
class Archived:
    """A verified archive object: its facts, its exact bytes and its parsed payload."""

    key: str
    submission: SubmissionDoc
    raw: bytes
    payload: SubmissionIn


class CorruptObject(Exception):
    pass


def verify(key: str, data: bytes, study_id: uuid.UUID) -> Archived:
    """Parse and check one archive object; raises CorruptObject naming what is wrong."""
    try:
        document = _Document.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        raise CorruptObject(f"not an archive document ({where}: {first['msg']})") from None
    if document.format != FORMAT:
        raise CorruptObject(f"unknown format {document.format[:64]!r}")
    doc = document.submission
    if doc.study_id != study_id:
        raise CorruptObject("belongs to another study")
    if key != archive_key(doc.study_id, doc.participant_id, doc.session.id, doc.id):
        raise CorruptObject("stored under a key its ids do not give")
    try:
        raw = base64.b64decode(document.payload_b64, validate=True)
    except (binascii.Error, ValueError):
        raise CorruptObject("payload is not valid base64") from None
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise CorruptObject("payload is not JSON") from None
    if submissions_service.checksum(payload) != doc.checksum:
        raise CorruptObject("payload checksum does not match")
    try:
        submission_in = SubmissionIn.model_validate(payload)
    except ValidationError:
        raise CorruptObject("payload is not a submission") from None
    if (
        submission_in.session_id != doc.session.id
        or submission_in.client_submission_id != doc.client_submission_id
    ):
        raise CorruptObject("payload and document disagree on session or submission id")
    return Archived(key=key, submission=doc, raw=raw, payload=submission_in)
