"""Put a study's submissions back into the database from its archive objects.

What a rebuild restores: assessment sessions, submissions (same ids, checksum and raw bytes)
and their submission tasks, re-derived from each payload. Each payload is checked against its
battery's modules as at ingest: one that does not fit comes back quarantined, with its problems
and no tasks, as it was stored. (One a coordinator released against a newer module version
comes back quarantined too: the archive holds what the device sent, not the release; the same
reprocess releases it again.) What it does not: the study, its
sites, participants, batteries and modules. Those must already exist (restored from a database
backup, or never lost); "an empty database" here means one empty of submissions. Participants
are found by code within the study, batteries by key and version within the study, modules by
key and version; an object whose references are missing is skipped and reported.

Every object is verified first: the payload's checksum is recomputed from its bytes and must
match, and the object must sit under the key its own ids give. A corrupt object is skipped and
reported, never half-restored. Re-running creates nothing twice. No outbox rows are written:
a restored submission is not a new one, and was archived and synced when it first arrived.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import structlog
from pydantic import AwareDatetime, BaseModel, ValidationError
from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.archive.service import FORMAT, archive_key, study_prefix
from server.archive.storage import ObjectNotFound, ObjectStorage
from server.assessment_sessions.models import AssessmentSession, SessionStatus
from server.batteries.models import Battery
from server.modules.models import Module
from server.participants.models import Participant
from server.studies.models import Study
from server.submissions import service as submissions_service
from server.submissions import validation
from server.submissions.models import Submission, SubmissionStatus, SubmissionTask
from server.submissions.schemas import SubmissionIn

log = structlog.get_logger(__name__)

SCOPE = (
    "a rebuild restores sessions, submissions and submission tasks only: the study, its sites, "
    "participants, batteries and modules must already exist"
)


class _SessionDoc(BaseModel):
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


class _SubmissionDoc(BaseModel):
    id: uuid.UUID
    client_submission_id: str
    participant_id: uuid.UUID
    participant_code: str
    study_id: uuid.UUID
    study_code: str
    site_code: str
    session: _SessionDoc
    checksum: str
    received_at: AwareDatetime


class _Document(BaseModel):
    format: str
    submission: _SubmissionDoc
    payload_b64: str


@dataclass(frozen=True)
class Archived:
    """A verified archive object: its facts, its exact bytes and its parsed payload."""

    key: str
    submission: _SubmissionDoc
    raw: bytes
    payload: SubmissionIn


@dataclass(frozen=True)
class Skipped:
    key: str
    reason: str


@dataclass
class RebuildReport:
    study_id: uuid.UUID
    study_code: str
    objects: int = 0
    restored: int = 0
    already_present: int = 0
    sessions_created: int = 0
    tasks_created: int = 0
    # Restored, but quarantined: its tasks do not fit its battery's modules.
    quarantined: int = 0
    # Failed verification: unreadable, wrong checksum, or not where its ids say it belongs.
    corrupt: list[Skipped] = field(default_factory=list)
    # Sound, but its participant, battery or module is not in this database.
    missing_reference: list[Skipped] = field(default_factory=list)
    # Sound, but the database holds different data under the same ids.
    conflicting: list[Skipped] = field(default_factory=list)

    @property
    def skipped(self) -> list[Skipped]:
        return [*self.corrupt, *self.missing_reference, *self.conflicting]

    @property
    def ok(self) -> bool:
        return not self.skipped

    def summary(self) -> str:
        return (
            f"study {self.study_code}: {self.objects} archived submissions, "
            f"{self.restored} restored ({self.quarantined} quarantined), "
            f"{self.already_present} already present, "
            f"{len(self.corrupt)} corrupt, {len(self.missing_reference)} missing reference data, "
            f"{len(self.conflicting)} conflicting"
        )

    def counts(self) -> dict[str, int]:
        return {
            "objects": self.objects,
            "restored": self.restored,
            "already_present": self.already_present,
            "sessions_created": self.sessions_created,
            "tasks_created": self.tasks_created,
            "quarantined": self.quarantined,
            "corrupt": len(self.corrupt),
            "missing_reference": len(self.missing_reference),
            "conflicting": len(self.conflicting),
        }


class CorruptObject(Exception):
    pass


class _Unplaceable(Exception):
    def __init__(self, reason: str, *, conflict: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.conflict = conflict


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


class _Rebuilder:
    def __init__(self, db: AsyncSession, study: Study, report: RebuildReport) -> None:
        self.db = db
        self.study = study
        self.report = report
        self.participants: dict[str, uuid.UUID] = {}
        self.batteries: dict[tuple[str, int], uuid.UUID] = {}
        self.modules: dict[tuple[str, int], uuid.UUID | None] = {}
        # Sessions this run created, with the receipt time of the snapshot they hold.
        self.created_sessions: dict[uuid.UUID, datetime] = {}

    async def load_references(self) -> None:
        rows = await self.db.execute(
            select(Participant.participant_code, Participant.id).where(
                Participant.study_id == self.study.id
            )
        )
        self.participants = {code: pid for code, pid in rows}
        rows_b = await self.db.execute(
            select(Battery.key, Battery.version, Battery.id).where(
                Battery.study_id == self.study.id
            )
        )
        self.batteries = {(k, v): bid for k, v, bid in rows_b}

    async def module_id(self, key: str, version: int) -> uuid.UUID | None:
        if (key, version) not in self.modules:
            self.modules[(key, version)] = await self.db.scalar(
                select(Module.id).where(Module.key == key, Module.version == version)
            )
        return self.modules[(key, version)]

    async def restore(self, item: Archived) -> bool:
        """Insert one verified submission; False when it was already there."""
        doc = item.submission
        participant_id = self.participants.get(doc.participant_code)
        if participant_id is None:
            raise _Unplaceable(
                f"no participant {doc.participant_code!r} in the study", conflict=False
            )
        battery_id = self.batteries.get((doc.session.battery_key, doc.session.battery_version))
        if battery_id is None:
            raise _Unplaceable(
                f"no battery {doc.session.battery_key!r} version {doc.session.battery_version} "
                "in the study",
                conflict=False,
            )
        problems = validation.check_tasks(
            item.payload.tasks, await submissions_service.modules_of_battery(self.db, battery_id)
        )
        module_ids: list[uuid.UUID] = []
        for task in [] if problems else item.payload.tasks:
            module_id = await self.module_id(task.module_key, task.module_version)
            if module_id is None:
                raise _Unplaceable(
                    f"no module {task.module_key!r} version {task.module_version}", conflict=False
                )
            module_ids.append(module_id)

        existing = (
            await self.db.execute(
                select(Submission.id, Submission.checksum).where(
                    or_(
                        Submission.id == doc.id,
                        and_(
                            Submission.participant_id == participant_id,
                            Submission.client_submission_id == doc.client_submission_id,
                        ),
                    )
                )
            )
        ).all()
        if existing:
            if len(existing) == 1 and tuple(existing[0]) == (doc.id, doc.checksum):
                return False
            raise _Unplaceable(
                "the database holds other data under this submission's ids", conflict=True
            )

        await self._session(doc, participant_id=participant_id, battery_id=battery_id)
        await self.db.execute(
            insert(Submission).values(
                id=doc.id,
                client_submission_id=doc.client_submission_id,
                participant_id=participant_id,
                study_id=self.study.id,
                session_id=doc.session.id,
                checksum=doc.checksum,
                raw_payload=item.raw,
                received_at=doc.received_at,
                status=SubmissionStatus.quarantined if problems else SubmissionStatus.accepted,
                problems=problems or None,
            )
        )
        if problems:
            self.report.quarantined += 1
            return True
        await self.db.execute(
            insert(SubmissionTask),
            [
                {
                    "submission_id": doc.id,
                    "position": position,
                    "module_id": module_id,
                    "module_key": task.module_key,
                    "module_version": task.module_version,
                    "summary": task.summary,
                    "trials": task.trials,
                    "n_trials": len(task.trials),
                }
                for position, (task, module_id) in enumerate(
                    zip(item.payload.tasks, module_ids, strict=True)
                )
            ],
        )
        self.report.tasks_created += len(module_ids)
        return True

    async def _session(
        self, doc: _SubmissionDoc, *, participant_id: uuid.UUID, battery_id: uuid.UUID
    ) -> None:
        """Create the session once; of this run's snapshots, the newest submission's wins."""
        s = doc.session
        values = {
            "status": s.status,
            "device": s.device,
            "app_version": s.app_version,
            "client_started_at": s.client_started_at,
            "started_at": s.started_at,
            "client_ended_at": s.client_ended_at,
            "ended_at": s.ended_at,
        }
        row = (
            await self.db.execute(
                select(AssessmentSession.participant_id, AssessmentSession.battery_id).where(
                    AssessmentSession.id == s.id
                )
            )
        ).one_or_none()
        if row is None:
            await self.db.execute(
                insert(AssessmentSession).values(
                    id=s.id,
                    participant_id=participant_id,
                    study_id=self.study.id,
                    battery_id=battery_id,
                    **values,
                )
            )
            self.created_sessions[s.id] = doc.received_at
            self.report.sessions_created += 1
            return
        if tuple(row) != (participant_id, battery_id):
            raise _Unplaceable(
                "the database holds this session for another participant or battery",
                conflict=True,
            )
        snapshot_at = self.created_sessions.get(s.id)
        if snapshot_at is not None and doc.received_at > snapshot_at:
            await self.db.execute(
                update(AssessmentSession).where(AssessmentSession.id == s.id).values(**values)
            )
            self.created_sessions[s.id] = doc.received_at


async def rebuild_study(db: AsyncSession, storage: ObjectStorage, study: Study) -> RebuildReport:
    """Restore the study's sessions, submissions and tasks from its archive objects.

    Flushes, never commits: the caller owns the transaction. See the module docstring for
    what must already exist and what is verified.
    """
    report = RebuildReport(study_id=study.id, study_code=study.code)
    rebuilder = _Rebuilder(db, study, report)
    await rebuilder.load_references()
    prefix = study_prefix(study.id)
    keys = await asyncio.to_thread(lambda: list(storage.list(prefix)))
    for key in keys:
        report.objects += 1
        try:
            data = await asyncio.to_thread(storage.get, key)
            item = verify(key, data, study.id)
        except ObjectNotFound:
            report.objects -= 1  # removed since it was listed
            continue
        except CorruptObject as exc:
            report.corrupt.append(Skipped(key, str(exc)))
            log.warning("archive_object_corrupt", key=key, reason=str(exc))
            continue
        try:
            created = await rebuilder.restore(item)
        except _Unplaceable as exc:
            skipped = Skipped(key, exc.reason)
            (report.conflicting if exc.conflict else report.missing_reference).append(skipped)
            log.warning("archive_object_not_restored", key=key, reason=exc.reason)
            continue
        if created:
            report.restored += 1
        else:
            report.already_present += 1
    log.info("study_rebuilt", study_id=str(study.id), **report.counts())
    return report
