"""Bulk enrolment from CSV: every row checked first, then all rows written or none."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.core.errors import Unprocessable
from server.participants import service
from server.participants.models import Participant
from server.participants.schemas import (
    ContactIn,
    ImportReport,
    ImportRowError,
    ParticipantCreate,
)
from server.studies.access import SiteScope
from server.studies.models import Site

REQUIRED_COLUMNS = ("participant_code", "site_code")
OPTIONAL_COLUMNS = ("timezone", "status", "enrolled_at", "email", "phone")
MAX_ROWS = 10_000


def _invalid(message: str, **details: object) -> Unprocessable:
    return Unprocessable(message, error_code="invalid_csv", details=details or None)


def _decode(content: bytes) -> str:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = content.count(b"\n", 0, exc.start) + 1
        raise _invalid(
            f"The file is not UTF-8 text (byte 0x{content[exc.start]:02x} on line {line}): "
            "save it from the spreadsheet as CSV UTF-8.",
            line=line,
            byte_offset=exc.start,
        ) from None
    if "\x00" in text:
        # A UTF-16 export or a binary file (a spreadsheet's own format) decodes as "UTF-8"
        # full of NULs, which PostgreSQL would refuse later; say what the file is instead.
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise _invalid(
            f"The file contains NUL characters (line {line}): it is not a UTF-8 CSV text file "
            "(UTF-16, or a spreadsheet's own format?).",
            line=line,
        )
    return text


def _header(reader: csv.DictReader[str]) -> list[str]:
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    duplicate = sorted({c for c in columns if columns.count(c) > 1})
    if missing or unknown or duplicate:
        raise Unprocessable(
            "The CSV header is not as expected.",
            error_code="invalid_csv",
            details={
                "missing_columns": missing,
                "unknown_columns": unknown,
                "duplicate_columns": duplicate,
                "expected": list(REQUIRED_COLUMNS + OPTIONAL_COLUMNS),
            },
        )
    return columns


def _read_rows(content: bytes) -> list[tuple[dict[str, str], list[str]]]:
    """The rows, each with what is wrong with its shape (more fields than the header)."""
    # newline="": the csv module's own line handling, so a line may end in CR (old Mac
    # spreadsheets), LF or CRLF, and a quoted field may hold any of them. strict: an
    # unclosed quote or text after a closing quote is an error, not a silently merged row.
    text = _decode(content)
    if not text.strip():
        raise _invalid("The file is empty: expected a header line and one row per participant.")
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[dict[str, str], list[str]]] = []
    try:
        columns = _header(reader)
        for raw in reader:
            extra = raw.pop(None, None)  # DictReader keeps surplus fields under None
            problems = []
            if extra:
                problems.append(
                    f"the row has {len(columns) + len(extra)} fields, the header {len(columns)}"
                    " (an unquoted comma?)"
                )
            rows.append(({(k or "").strip(): (v or "").strip() for k, v in raw.items()}, problems))
            if len(rows) > MAX_ROWS:
                raise _invalid(f"At most {MAX_ROWS} rows per file.")
    except csv.Error as exc:
        # e.g. an unclosed quote ("unexpected end of data"), a field past the csv limit.
        # DictReader's line_num is still where the last good row ended: an unclosed quote is
        # found at the end of the file, but the row it opened starts on the next line.
        line = reader.line_num + 1
        raise _invalid(
            f"The file is not valid CSV in the row starting on line {line}: {exc}.", line=line
        ) from None
    if not rows:
        raise _invalid("The file has a header but no rows.")
    return rows


def _parse_datetime(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _row_errors(err: ValidationError) -> list[str]:
    # Messages name the column; the rejected value is never echoed back (it may be PHI).
    return [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]


async def import_csv(
    db: AsyncSession,
    settings: Settings,
    *,
    study_id: uuid.UUID,
    scope: SiteScope,
    content: bytes,
    dry_run: bool,
) -> ImportReport:
    rows = _read_rows(content)
    # A site-scoped member's other sites are unknown codes here, as another study's would be.
    study_sites = scope.filter(select(Site).where(Site.study_id == study_id), Site.id)
    sites = {s.code: s.id for s in (await db.execute(study_sites)).scalars()}
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
    for number, (row, shape_errors) in enumerate(rows, start=2):  # row 1 is the header
        code = row.get("participant_code") or None
        errors = list(shape_errors)
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
        await service.create(
            db, study_id=study_id, participant_in=participant_in, scope=scope, settings=settings
        )
    report.created = len(accepted)
    return report
