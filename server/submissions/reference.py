"""The ingest benchmark's reference: the same body handling, models and validation as
POST /api/submit, writing nothing. Mounted only with ENABLE_REFERENCE_ENDPOINT=true."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from sqlalchemy import select

from server.core.catalogue import PublicationStatus
from server.core.db import DBSession
from server.modules.models import Module
from server.submissions import service, validation
from server.submissions.body import parse_json, parse_model, read_body
from server.submissions.schemas import SubmissionIn

router = APIRouter(prefix="/api/submit", tags=["benchmark"], include_in_schema=False)


async def _modules(db: DBSession) -> dict[tuple[str, int], validation.CompiledModule]:
    known = validation.compiled_by_ref()
    if not known:
        # Once per process: afterwards the reference touches no database at all.
        for m in (
            await db.execute(select(Module).where(Module.status == PublicationStatus.published))
        ).scalars():
            validation.compile_module(m.id, m.key, m.version, m.trial_schema, m.summary_schema)
    return known


@router.post("/reference", status_code=status.HTTP_200_OK)
async def reference(request: Request, db: DBSession) -> dict[str, str]:
    # Settings as POST /api/submit reads them (not the thread-pool AppSettings dependency).
    raw = await read_body(request, request.app.state.settings.MAX_SUBMISSION_BYTES)
    payload = parse_json(raw)
    submission_in = parse_model(SubmissionIn, payload)
    known = await _modules(db)
    wanted = {(t.module_key, t.module_version) for t in submission_in.tasks}
    problems = validation.check_tasks(
        submission_in.tasks, {k: v for k, v in known.items() if k in wanted}
    )
    return {
        "checksum": service.checksum(payload),
        "status": "quarantined" if problems else "accepted",
    }
