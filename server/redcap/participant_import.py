"""Enrolment from REDCap: the records of one form become participants, all or none.

Like the CSV import (server.participants.csv_import): every record is checked first and
reported (new / already enrolled / rejected, with the reason); a dry run writes nothing; a
real run with any rejected record writes nothing either. Only the record id, the participant
code field, the form's status and the data access group are exported: nothing else of the
record leaves REDCap.

The pieces here are what the job (server.redcap.participant_import_job) puts together:
`fetch` talks to REDCap and nothing else (it runs with no transaction open), `check_sites`
and `evaluate` work on what the database and REDCap said.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.core.errors import Unprocessable
from server.participants.models import Participant
from server.participants.schemas import ParticipantCreate
from server.redcap.client import RedcapClient
from server.redcap.schemas import ImportedRecord, ParticipantImportIn, ParticipantImportReport
from server.studies.models import Site

DAG = "redcap_data_access_group"
MAX_RECORDS = 10_000


def _problem(loc: list[str], msg: str, **extra: Any) -> Unprocessable:
    return Unprocessable(
        "The import settings do not fit the REDCap project or this study.",
        details=[{"loc": ["body", *loc], "msg": msg, **extra}],
    )


@dataclass(frozen=True)
class Fetched:
    """What REDCap said: the form's rows, keyed by its record id field."""

    id_field: str
    code_field: str
    rows: list[dict[str, Any]]


async def study_sites(db: AsyncSession, study_id: uuid.UUID) -> dict[str, Site]:
    """The study's sites by code."""
    rows = await db.execute(select(Site).where(Site.study_id == study_id))
    return {s.code: s for s in rows.scalars()}


async def enrolled_codes(db: AsyncSession, study_id: uuid.UUID) -> set[str]:
    rows = await db.execute(
        select(Participant.participant_code).where(Participant.study_id == study_id)
    )
    return set(rows.scalars())


def check_sites(sites: dict[str, Site], import_in: ParticipantImportIn) -> Site | None:
    """The fixed site (site_source=fixed), or None; Unprocessable when the settings name
    sites this study does not have."""
    if import_in.site_source == "fixed":
        fixed = next((s for s in sites.values() if s.id == import_in.site_id), None)
        if fixed is None:
            raise _problem(["site_id"], "site_source=fixed needs a site of this study")
        return fixed
    for name, code in import_in.dag_to_site.items():
        if code not in sites:
            raise _problem(["dag_to_site", name], f"no site with code '{code}' in this study")
    return None


async def _export(
    client: RedcapClient, settings: Settings, *, form: str, code_field: str, dag: bool
) -> list[dict[str, Any]]:
    """The form's rows, a chunk of records per call (REDCap fails on very large exports)."""
    metadata = await client.metadata()
    id_field = str(metadata[0]["field_name"])
    ids = list(
        dict.fromkeys(
            str(r[id_field])
            for r in await client.export_records(fields=[id_field])
            if r.get(id_field)
        )
    )
    if len(ids) > MAX_RECORDS:
        raise Unprocessable(f"At most {MAX_RECORDS} records per import.")
    rows: list[dict[str, Any]] = []
    size = settings.REDCAP_EXPORT_CHUNK_RECORDS
    for start in range(0, len(ids), size):
        rows += await client.export_records(
            records=ids[start : start + size],
            fields=[code_field],
            forms=[form],
            export_data_access_groups=dag,
            export_blank_for_gray_form_status=True,
        )
    return rows


async def fetch(
    client: RedcapClient, settings: Settings, import_in: ParticipantImportIn
) -> Fetched:
    """Check the form and code field against the project's metadata, then export the form.
    REDCap only: call it with no transaction open."""
    metadata = await client.metadata()
    fields = {str(row["field_name"]): row for row in metadata}
    forms = {str(row["form_name"]) for row in metadata}
    id_field = str(metadata[0]["field_name"]) if metadata else ""
    if import_in.form not in forms:
        raise _problem(["form"], f"REDCap has no form '{import_in.form}'", forms=sorted(forms))
    code_field = import_in.participant_code_field or id_field
    if code_field not in fields:
        raise _problem(
            ["participant_code_field"], f"REDCap has no field '{code_field}'", fields=list(fields)
        )
    rows = await _export(
        client,
        settings,
        form=import_in.form,
        code_field=code_field,
        dag=import_in.site_source == "dag",
    )
    return Fetched(id_field=id_field, code_field=code_field, rows=rows)


def evaluate(
    import_in: ParticipantImportIn,
    fetched: Fetched,
    *,
    sites: dict[str, Site],
    fixed_site: Site | None,
    existing: set[str],
) -> tuple[ParticipantImportReport, list[ParticipantCreate]]:
    """Each record's fate, and the participants to create if none is rejected."""
    id_field, code_field = fetched.id_field, fetched.code_field
    by_record: dict[str, list[dict[str, Any]]] = {}
    for row in fetched.rows:
        by_record.setdefault(str(row.get(id_field, "")), []).append(row)
    status_field = f"{import_in.form}_complete"

    seen: dict[str, str] = {}
    report: list[ImportedRecord] = []
    accepted: list[ParticipantCreate] = []
    for record_id, record_rows in by_record.items():
        codes = [str(r.get(code_field) or "").strip() for r in record_rows]
        code = next((c for c in codes if c), "")
        in_form = any(str(r.get(status_field) or "") != "" for r in record_rows)
        if not in_form and (code_field == id_field or not code):
            continue  # the form was never filled in for this record
        site: Site | None = fixed_site
        reason: str | None = None
        if fixed_site is None:
            dag = next((str(r.get(DAG) or "") for r in record_rows if r.get(DAG)), "")
            if not dag:
                reason = "the record is in no data access group"
            elif dag not in import_in.dag_to_site:
                reason = f"data access group '{dag}' is not mapped to a site"
            else:
                site = sites[import_in.dag_to_site[dag]]
        if reason is None and not code:
            reason = f"{code_field} is blank"
        elif reason is None and code in seen:
            reason = f"{code_field} is the same as record {seen[code]}'s"
        candidate: ParticipantCreate | None = None
        if reason is None and site is not None:
            try:
                candidate = ParticipantCreate(
                    site_id=site.id, participant_code=code, timezone=site.timezone
                )
            except ValidationError:
                reason = (
                    f"{code_field} is not a valid participant code (letters, digits, '.', '_' "
                    "and '-', at most 64)"
                )
        if code:
            seen.setdefault(code, record_id)
        site_code = site.code if site is not None else None
        if reason is not None:
            report.append(
                ImportedRecord(
                    record_id=record_id,
                    participant_code=code or None,
                    site_code=site_code,
                    status="rejected",
                    reason=reason,
                )
            )
        elif code in existing:
            report.append(
                ImportedRecord(
                    record_id=record_id,
                    participant_code=code,
                    site_code=site_code,
                    status="already_enrolled",
                )
            )
        else:
            assert candidate is not None
            accepted.append(candidate)
            report.append(
                ImportedRecord(
                    record_id=record_id, participant_code=code, site_code=site_code, status="new"
                )
            )

    result = ParticipantImportReport(
        dry_run=import_in.dry_run,
        total_records=len(report),
        new=len(accepted),
        already_enrolled=sum(1 for r in report if r.status == "already_enrolled"),
        rejected=sum(1 for r in report if r.status == "rejected"),
        created=0,
        records=report,
    )
    return result, accepted
