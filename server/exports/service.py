"""Export requests: create (a row and its job, one transaction), freeze, re-run, and the
signed download token. Services flush, never commit; the build is server.exports.build."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.errors import Conflict, NotFound, Unprocessable
from server.core.models import utcnow
from server.exports.models import Export
from server.exports.schemas import ExportCreate, ExportFilters
from server.outbox import service as outbox
from server.outbox.models import OutboxEvent
from server.studies.access import StudyAccess
from server.studies.models import Site

DOWNLOAD_TTL_S = 15 * 60


async def effective_filters(
    db: AsyncSession, access: StudyAccess, request: ExportFilters
) -> dict[str, Any]:
    """The filters as run: sites checked, a site-scoped member's sites filled in."""
    site_ids = request.site_ids
    if site_ids is not None:
        for site_id in site_ids:
            site = await db.get(Site, site_id)
            if site is None or site.study_id != access.study.id or not access.sites.covers(site_id):
                raise NotFound("No such site in this study.")
    elif access.sites.site_ids is not None:
        # A site-scoped member exports their sites, and only those.
        site_ids = sorted(access.sites.site_ids)
    if request.date_from and request.date_to and request.date_from > request.date_to:
        raise Unprocessable("date_from is after date_to.")
    return {
        "site_ids": None if site_ids is None else sorted(str(s) for s in set(site_ids)),
        "modules": [m.model_dump() for m in request.modules],
        "date_from": request.date_from.isoformat() if request.date_from else None,
        "date_to": request.date_to.isoformat() if request.date_to else None,
        "participant_statuses": sorted(s.value for s in request.participant_statuses),
    }


async def _queue(db: AsyncSession, export: Export) -> None:
    db.add(export)
    await db.flush()
    await outbox.add(
        db,
        [
            outbox.Event(
                outbox.EXPORT_BUILD,
                {"export_id": str(export.id)},
                subject_id=export.id,
                study_id=export.study_id,
            )
        ],
    )
    export.job_id = await db.scalar(
        select(OutboxEvent.id).where(
            OutboxEvent.subject_id == export.id, OutboxEvent.topic == outbox.EXPORT_BUILD
        )
    )
    await db.flush()


async def create(
    db: AsyncSession, *, access: StudyAccess, user_id: uuid.UUID, request: ExportCreate
) -> Export:
    export = Export(
        id=uuid.uuid4(),
        study_id=access.study.id,
        requested_by=user_id,
        filters=await effective_filters(db, access, request),
        # Psych-DS lays out the CSVs: asking for it asks for them.
        formats=sorted(set(request.formats) | ({"csv"} if "psychds" in request.formats else set())),
    )
    await _queue(db, export)
    return export


async def freeze(db: AsyncSession, *, export: Export, user_id: uuid.UUID) -> Export:
    if export.storage_key is None:
        raise Conflict("Only a finished export can be frozen.", error_code="export_not_done")
    if export.frozen_at is None:
        export.frozen_at = utcnow()
        export.frozen_by = user_id
        await db.flush()
    return export


async def rerun(db: AsyncSession, *, source: Export, user_id: uuid.UUID) -> Export:
    """A new export reading exactly the frozen one's submissions, to the same bytes."""
    if source.frozen_at is None:
        raise Conflict("Only a frozen export can be re-run.", error_code="export_not_frozen")
    export = Export(
        id=uuid.uuid4(),
        study_id=source.study_id,
        requested_by=user_id,
        filters=source.filters,
        formats=source.formats,
        source_export_id=source.id,
    )
    await _queue(db, export)
    return export


async def job_status(db: AsyncSession, export: Export) -> tuple[str, str | None]:
    """The job's state and its error (the outbox row's: scrubbed, ids only)."""
    if export.storage_key is not None:
        return "succeeded", None
    job = await db.get(OutboxEvent, export.job_id) if export.job_id else None
    return ("queued", None) if job is None else (str(job.status), job.error)


# --- the download link's token: the export id and an expiry, signed; no data in it ---------


def _sign(secret: str, message: str) -> str:
    digest = hmac.new(secret.encode(), b"export-download:" + message.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


def download_token(
    secret: str, export_id: uuid.UUID, *, now: float | None = None
) -> tuple[str, datetime]:
    expires = int((now if now is not None else time.time()) + DOWNLOAD_TTL_S)
    message = f"{export_id}.{expires}"
    return f"{expires}.{_sign(secret, message)}", datetime.fromtimestamp(expires, UTC)


def check_token(secret: str, export_id: uuid.UUID, token: str) -> None:
    expires, _, signature = token.partition(".")
    if not expires.isdigit() or not hmac.compare_digest(
        signature, _sign(secret, f"{export_id}.{expires}")
    ):
        raise NotFound("No such download.")
    if int(expires) < time.time():
        raise Conflict("This download link has expired; ask for a new one.",
                       error_code="download_expired")  # fmt: skip
