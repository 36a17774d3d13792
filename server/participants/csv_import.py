"""Bulk enrolment from CSV: every row checked first, then all rows written or none."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.errors import Unprocessable
from server.participants import service
from server.participants.models import Participant
from server.participants.schemas import (
    ContactIn,
    ImportReport,
    ImportRowError,
    ParticipantCreate,
)
from server.studies.models import Site

REQUIRED_COLUMNS = ("participant_code", "site_code")
OPTIONAL_COLUMNS = ("timezone", "status", "enrolled_at", "email", "phone")
MAX_ROWS = 10_000


def _read_rows(content: bytes) -> list[dict[str, str]]:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Unprocessable("The file is not UTF-8 text.", error_code="invalid_csv") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if missing or unknown:
        raise Unprocessable(
            "The CSV header is not as expected.",
            error_code="invalid_csv",
            details={
                "missing_columns": missing,
                "unknown_columns": unknown,
                "expected": list(REQUIRED_COLUMNS + OPTIONAL_COLUMNS),
            },
        )
    rows = []
    for raw in reader:
        rows.append({(k or "").strip(): (v or "").strip() for k, v in raw.items() if k})
        if len(rows) > MAX_ROWS:
            raise Unprocessable(f"At most {MAX_ROWS} rows per file.", error_code="invalid_csv")
    if not rows:
        raise Unprocessable("The file has no rows.", error_code="invalid_csv")
    return rows


def _parse_datetime(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _row_errors(err: ValidationError) -> list[str]:
    # Messages name the column; the rejected value is never echoed back (it may be PHI).
    return [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]


async def import_csv(
    db: AsyncSession, *, study_id: uuid.UUID, content: bytes, dry_run: bool
) -> ImportReport:
    rows = _read_rows(content)
    sites = {
        s.code: s.id
        for s in (await db.execute(select(Site).where(Site.study_id == study_id))).scalars()
    }
    existing = set(
        (
            await db.execute(
                select(Participant.participant_code).where(Participant.study_id == study_id)
            )
        ).scalars()
    )
    seen: dict[str, int] = {}
    accepted: list[ParticipantCreate] = []
    rejected: list[ImportRowError] = []
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        code = row.get("participant_code") or None
        errors: list[str] = []
        site_id = sites.get(row.get("site_code", ""))
        if site_id is None:
            errors.append("site_code: no such site in this study")
        if code in existing:
            errors.append("participant_code: already enrolled in this study")
        elif code and code in seen:
            errors.append(f"participant_code: duplicate of row {seen[code]}")
        if code:
            seen.setdefault(code, number)
        try:
            contact = None
            if row.get("email") or row.get("phone"):
                contact = ContactIn(email=row.get("email") or None, phone=row.get("phone") or None)
            enrolled_at = _parse_datetime(row["enrolled_at"]) if row.get("enrolled_at") else None
            candidate = ParticipantCreate(
                site_id=site_id or uuid.UUID(int=0),
                participant_code=code or "",
                timezone=row.get("timezone") or "UTC",
                status=row.get("status") or "enrolled",
                enrolled_at=enrolled_at,
                contact=contact,
            )
        except ValidationError as err:
            errors.extend(_row_errors(err))
        except ValueError:
            errors.append("enrolled_at: not an ISO 8601 date or date-time")
        if errors:
            rejected.append(ImportRowError(row=number, participant_code=code, errors=errors))
        else:
            accepted.append(candidate)
    report = ImportReport(
        dry_run=dry_run,
        total_rows=len(rows),
        accepted=len(accepted),
        rejected=rejected,
        created=0,
    )
    if rejected:
        raise Unprocessable(
            f"{len(rejected)} of {len(rows)} rows were rejected; nothing was imported.",
            error_code="import_rejected",
            details=report.model_dump(mode="json"),
        )
    if dry_run:
        return report
    for participant_in in accepted:
        await service.create(db, study_id=study_id, participant_in=participant_in)
    report.created = len(accepted)
    return report
