"""Enrolment from REDCap as a job: asked for by a request, run by a task, read back by id.

- `request_import` (the POST): checks the settings against the study's sites (422 at once),
  stores them as a RedcapParticipantImport and queues an outbox row
  (redcap.import_participants) in the request's transaction. Nothing is sent to REDCap.
- `run_import` (the task, workers.tasks.redcap.import_participants): reads the import and its
  connection in a short transaction of its own, asks REDCap with no transaction open, then
  writes the participants, the report and the audit entry in the task's one transaction (the
  outbox row finishes in it too): all or none.
- Idempotent by id: an import that has its report (or its problem) is done; a redelivered
  task finds it so under the row's lock and writes nothing again.
- `get_import` (the GET): the report, with the job's status, error and end from its outbox row.
"""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit import service as audit
from server.audit.models import AuditAction
from server.core.config import Settings
from server.core.errors import NotFound, Unprocessable
from server.outbox import service as outbox
from server.outbox.models import JobStatus, OutboxEvent
from server.participants import service as participants_service
from server.redcap import participant_import as rules
from server.redcap.batch import own_transaction
from server.redcap.client import client_for
from server.redcap.models import RedcapConnection, RedcapParticipantImport
from server.redcap.schemas import (
    ParticipantImportIn,
    ParticipantImportRead,
    ParticipantImportReport,
)

log = structlog.get_logger(__name__)


async def request_import(
    db: AsyncSession,
    *,
    connection: RedcapConnection,
    import_in: ParticipantImportIn,
    requested_by: uuid.UUID | None,
) -> ParticipantImportRead:
    rules.check_sites(await rules.study_sites(db, connection.study_id), import_in)
    row = RedcapParticipantImport(
        connection_id=connection.id,
        requested_by=requested_by,
        settings=import_in.model_dump(mode="json"),
    )
    db.add(row)
    await db.flush()
    await outbox.add(
        db,
        [
            outbox.Event(
                topic=outbox.REDCAP_IMPORT_PARTICIPANTS,
                payload={"import_id": str(row.id)},
                subject_id=row.id,
                study_id=connection.study_id,
            )
        ],
    )
    log.info("redcap_participant_import_queued", import_id=str(row.id))
    return await _read(db, row)


async def run_import(db: AsyncSession, settings: Settings, import_id: uuid.UUID) -> str | None:
    """The task's work (module docstring): the job's error if it failed, else None.

    `db` is the task's transaction, begun but not yet connected: it is first used after the
    REDCap calls, so none is open during them."""
    async with own_transaction(db) as session:
        row = await session.get(RedcapParticipantImport, import_id)
        if row is None or row.report is not None or row.problem is not None:
            return None
        connection = await session.get(RedcapConnection, row.connection_id)
        if connection is None:
            return None
    import_in = ParticipantImportIn.model_validate(row.settings)
    client = client_for(connection, settings, interactive=False)
    try:
        fetched: rules.Fetched | None = await rules.fetch(client, settings, import_in)
        problem: Unprocessable | None = None
    except Unprocessable as exc:
        fetched, problem = None, exc

    # From here on, the one transaction of the task.
    row = await db.get(
        RedcapParticipantImport, import_id, with_for_update=True, populate_existing=True
    )
    if row is None or row.report is not None or row.problem is not None:
        return None  # done by an earlier delivery meanwhile
    study_id = connection.study_id
    sites = await rules.study_sites(db, study_id)
    try:
        fixed_site = rules.check_sites(sites, import_in)
    except Unprocessable as exc:
        problem = exc
    if problem is not None or fetched is None:
        assert problem is not None
        row.problem = problem.details or [{"msg": problem.message}]
        await db.flush()
        return problem.message
    report, accepted = rules.evaluate(
        import_in,
        fetched,
        sites=sites,
        fixed_site=fixed_site,
        existing=await rules.enrolled_codes(db, study_id),
    )
    if not report.rejected and not import_in.dry_run:
        for participant_in in accepted:
            await participants_service.create(
                db, study_id=study_id, participant_in=participant_in, settings=settings
            )
        report.created = len(accepted)
    row.report = report.model_dump(mode="json")
    await db.flush()
    if report.created:
        await audit.record(
            db,
            action=AuditAction.redcap_participants_imported,
            object_type="redcap_connection",
            object_id=connection.id,
            study_id=study_id,
            site_id=connection.site_id,
            summary={"created": report.created, "total_records": report.total_records},
            actor_id=row.requested_by,
        )
    log.info(
        "redcap_participants_imported",
        import_id=str(import_id),
        connection_id=str(connection.id),
        created=report.created,
        already_enrolled=report.already_enrolled,
        rejected=report.rejected,
    )
    if report.rejected:
        return (
            f"{report.rejected} of {report.total_records} records were rejected; "
            "nothing was imported."
        )
    return None


async def get_import(
    db: AsyncSession, *, connection: RedcapConnection, import_id: uuid.UUID
) -> ParticipantImportRead:
    row = await db.get(RedcapParticipantImport, import_id)
    if row is None or row.connection_id != connection.id:
        raise NotFound("No such participant import.")
    return await _read(db, row)


async def _read(db: AsyncSession, row: RedcapParticipantImport) -> ParticipantImportRead:
    job = await db.scalar(
        select(OutboxEvent).where(
            OutboxEvent.subject_id == row.id,
            OutboxEvent.topic == outbox.REDCAP_IMPORT_PARTICIPANTS,
        )
    )
    return ParticipantImportRead(
        id=row.id,
        connection_id=row.connection_id,
        job_id=job.id if job is not None else None,
        status=job.status if job is not None else JobStatus.queued,
        dry_run=bool(row.settings.get("dry_run")),
        created_at=row.created_at,
        finished_at=job.finished_at if job is not None else None,
        error=job.error if job is not None else None,
        problem=row.problem,
        report=ParticipantImportReport.model_validate(row.report) if row.report else None,
    )
