from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response, status

from server.audit import service as audit
from server.audit.models import AuditAction
from server.core.db import AutocommitSession, DBSession
from server.core.errors import Unauthorized, error_responses
from server.participant_auth.deps import IngestCredentials, check_login
from server.studies.deps import StudyReader
from server.submissions import quarantine, read, service
from server.submissions.body import parse_json, parse_model, read_body
from server.submissions.deps import SubmissionManager, SubmissionReader
from server.submissions.models import SubmissionStatus
from server.submissions.schemas import (
    Receipt,
    ReprocessIn,
    SubmissionIn,
    SubmissionPage,
    SubmissionRead,
)

router = APIRouter(prefix="/api/submit", tags=["submissions"])
staff_router = APIRouter(prefix="/api/submissions", tags=["submissions"])

# The body is read by hand (gzip, size limit before parsing), so document it for OpenAPI.
_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SubmissionIn"}}},
    }
}


@router.post(
    "",
    response_model=Receipt,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_BODY,
    responses={
        200: {"model": Receipt, "description": "A replay: the first receipt"},
        202: {
            "model": Receipt,
            "description": "Stored but quarantined (status, problems): its tasks do not fit "
            "their modules. Kept as sent for a coordinator to reprocess; the device may delete "
            "its copy and must not send it again. A replay of it answers 202 as well.",
        },
        **error_responses(
            401,
            404,
            409,
            413,
            415,
            422,
            s404="No such session of this participant: start it first",
            s422="Not a submission at all (not JSON, or not its shape); a submission whose "
            "tasks do not fit their modules is stored quarantined instead (202)",
            s409="This client_submission_id was already used for different data",
        ),
    },
)
async def submit(
    request: Request,
    response: Response,
    db: AutocommitSession,
    credentials: IngestCredentials,
) -> Receipt:
    try:
        # Not AppSettings: a plain `def` dependency, run in the thread pool.
        raw = await read_body(request, request.app.state.settings.MAX_SUBMISSION_BYTES)
        payload = parse_json(raw)
        submission_in = parse_model(SubmissionIn, payload)
        receipt, created = await service.submit_with_login_check(
            db, token=credentials, submission_in=submission_in, payload=payload, raw=raw
        )
    except Unauthorized:
        raise
    except Exception:
        # The login is checked with the insert; a request failing before it (413, 422, 404,
        # 409...) checks it now, so that a login that has ended still answers 401 first.
        await check_login(db, credentials)
        raise
    if receipt.status == SubmissionStatus.quarantined:
        response.status_code = status.HTTP_202_ACCEPTED
    elif not created:
        response.status_code = status.HTTP_200_OK
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return receipt


@staff_router.get("", response_model=SubmissionPage)
async def list_submissions(
    access: StudyReader,
    db: DBSession,
    submission_status: Annotated[
        SubmissionStatus,
        Query(alias="status", description="quarantined: the ones waiting for a reprocess"),
    ] = SubmissionStatus.quarantined,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> SubmissionPage:
    """A study's submissions of one status, oldest first, each with its problems."""
    return await read.list_page(
        db,
        study_id=access.study.id,
        scope=access.sites,
        status=submission_status,
        cursor=cursor,
        limit=limit,
    )


@staff_router.get("/{submission_id}", response_model=SubmissionRead)
async def get_submission(access: SubmissionReader, db: DBSession) -> SubmissionRead:
    return await read.get(db, access.submission_id)


@staff_router.post(
    "/{submission_id}/reprocess",
    response_model=SubmissionRead,
    responses=error_responses(
        404, 409, 422, s409="Not quarantined (error_code submission_not_quarantined)"
    ),
)
async def reprocess_submission(
    access: SubmissionManager,
    db: DBSession,
    choice: Annotated[ReprocessIn | None, Body()] = None,
) -> SubmissionRead:
    """Check a quarantined submission again (after a corrected module version is published,
    say): clean, it is accepted and sent on (REDCap once); otherwise it stays quarantined
    with the problems found now. Who asked and when is kept on the submission."""
    choice = choice or ReprocessIn()
    await quarantine.reprocess(
        db,
        submission_id=access.submission_id,
        user_id=access.principal.user.id,
        choice=choice,
    )
    result = await read.get(db, access.submission_id)
    await audit.record(
        db,
        action=AuditAction.submission_reprocessed,
        object_type="submission",
        object_id=access.submission_id,
        study_id=access.study.study.id,
        site_id=access.site_id,
        # The outcome and the versions asked for; problems by count (messages quote the body).
        summary={
            "status": result.status.value,
            "module_versions": choice.module_versions,
            "problems": len(result.problems),
        },
    )
    return result
