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

Every object is verified first (server.archive.verify): a corrupt one is skipped and reported,
never half-restored. Re-running creates nothing twice. No outbox rows are written: a restored
submission is not a new one, and was archived and synced when it first arrived. What a run did
is its RebuildReport (server.archive.rebuild_report).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import structlog
from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.archive.rebuild_report import RebuildReport, Skipped
from server.archive.service import study_prefix
from server.archive.storage import ObjectNotFound, ObjectStorage
from server.archive.verify import Archived, CorruptObject, SubmissionDoc, verify
from server.assessment_sessions.models import AssessmentSession
from server.batteries.models import Battery
from server.modules.models import Module
from server.participants.models import Participant
from server.studies.models import Study
from server.submissions import service as submissions_service
from server.submissions import validation
from server.submissions.models import Submission, SubmissionStatus, SubmissionTask

log = structlog.get_logger(__name__)

SCOPE = (
    "a rebuild restores sessions, submissions and submission tasks only: the study, its sites, "
    "participants, batteries and modules must already exist"
)


class _Unplaceable(Exception):
    def __init__(self, reason: str, *, conflict: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.conflict = conflict


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
        self, doc: SubmissionDoc, *, participant_id: uuid.UUID, battery_id: uuid.UUID
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
