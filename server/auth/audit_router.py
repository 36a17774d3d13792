"""The audit trail over HTTP, for administrators and auditors: here, not in server.audit,
because it needs the caller (server.auth.deps), and server.auth records into server.audit."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import AwareDatetime

from server.audit import service
from server.audit.models import AuditAction
from server.audit.schemas import AuditEntryRead, AuditPage
from server.audit.service import AuditFilter
from server.auth.deps import CurrentAuditReader
from server.core.db import DBSession
from server.core.errors import Unprocessable

router = APIRouter(prefix="/api/audit", tags=["audit"])

# An export is built in memory (the request's transaction ends before a streamed body would
# be read): past this many entries, narrow the range.
MAX_EXPORT_ROWS = 100_000
CSV_COLUMNS = (
    "seq",
    "occurred_at",
    "actor_id",
    "action",
    "object_type",
    "object_id",
    "study_id",
    "site_id",
    "request_id",
    "client_ip",
    "summary",
    "hash",
)


def audit_filter(
    study_id: uuid.UUID | None = None,
    site_id: uuid.UUID | None = None,
    actor_id: uuid.UUID | None = None,
    action: AuditAction | None = None,
    object_type: Annotated[str | None, Query(max_length=64)] = None,
    object_id: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[AwareDatetime | None, Query(description="From (inclusive)")] = None,
    until: Annotated[AwareDatetime | None, Query(description="To (exclusive)")] = None,
) -> AuditFilter:
    return AuditFilter(
        study_id=study_id,
        site_id=site_id,
        actor_id=actor_id,
        action=None if action is None else action.value,
        object_type=object_type,
        object_id=object_id,
        since=since,
        until=until,
    )


Filter = Annotated[AuditFilter, Depends(audit_filter)]


def _seq(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit() or len(cursor) > 18:
        raise Unprocessable(
            "The cursor is not valid.",
            details=[{"loc": ["query", "cursor"], "msg": "not a cursor this API issued"}],
        )
    return int(cursor)


@router.get("", response_model=AuditPage)
async def list_entries(
    where: Filter,
    db: DBSession,
    _: CurrentAuditReader,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditPage:
    """Newest first."""
    rows, next_seq = await service.list_page(db, where=where, before_seq=_seq(cursor), limit=limit)
    return AuditPage(
        items=[AuditEntryRead.model_validate(r) for r in rows],
        next_cursor=None if next_seq is None else str(next_seq),
    )


@router.get(
    "/export.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "The entries, oldest first"}},
)
async def export_csv(where: Filter, db: DBSession, principal: CurrentAuditReader) -> Response:
    """Every entry the filters match, oldest first, as CSV (the export is itself recorded)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    count = 0
    async for entry in service.stream(db, where=where):
        count += 1
        if count > MAX_EXPORT_ROWS:
            raise Unprocessable(
                f"More than {MAX_EXPORT_ROWS} entries match: narrow the date range.",
                error_code="export_too_large",
            )
        read = AuditEntryRead.model_validate(entry).model_dump(mode="json")
        read["summary"] = orjson.dumps(read["summary"], option=orjson.OPT_SORT_KEYS).decode()
        writer.writerow(["" if read[c] is None else read[c] for c in CSV_COLUMNS])
    await service.record(
        db,
        action=AuditAction.audit_exported,
        object_type="audit",
        actor_id=principal.user.id,
        study_id=where.study_id,
        site_id=where.site_id,
        summary={
            "entries": count,
            "filters": {
                k: None if v is None else str(v) for k, v in vars(where).items() if v is not None
            },
        },
    )
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="audit.csv"'},
    )
