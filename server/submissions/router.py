from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status

from server.core.db import AutocommitSession, DBSession
from server.core.errors import Unauthorized, error_responses
from server.participant_auth.deps import IngestCredentials, check_login
from server.submissions import service
from server.submissions.body import parse_json, parse_model, read_body
from server.submissions.deps import SubmissionReader
from server.submissions.schemas import Receipt, SubmissionIn, SubmissionRead

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
        **error_responses(
            401,
            404,
            409,
            413,
            415,
            422,
            s404="No such session of this participant: start it first",
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
    if not created:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    return receipt


@staff_router.get("/{submission_id}", response_model=SubmissionRead)
async def get_submission(access: SubmissionReader, db: DBSession) -> SubmissionRead:
    return await service.get(db, access.submission_id)
