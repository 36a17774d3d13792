from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from server.core.config import AppSettings
from server.core.db import DBSession
from server.core.errors import error_responses
from server.participant_auth.deps import CurrentParticipant
from server.submissions.body import parse_json, parse_model, read_body
from server.sync import service
from server.sync.schemas import SyncIn, SyncResult

router = APIRouter(prefix="/api/sync", tags=["sync"])

_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SyncIn"}}},
    }
}


@router.post(
    "",
    response_model=SyncResult,
    openapi_extra=_BODY,
    # No 409: a conflicting item is rejected on its own, inside the 200.
    responses=error_responses(401, 413, 415, 422),
)
async def sync(
    request: Request, db: DBSession, settings: AppSettings, me: CurrentParticipant
) -> SyncResult:
    raw = await read_body(request, settings.MAX_SYNC_BYTES)
    sync_in = parse_model(SyncIn, parse_json(raw))
    return await service.sync(db, participant=me.participant, sync_in=sync_in)
