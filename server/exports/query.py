"""The SQL of an export: which submissions it reads, and its trial rows as one COPY.

The selection is written once into export_submissions when a build starts; every file then
reads that set, so files agree with each other and a freeze's re-run reads the same rows.
"""

# SQL text is assembled from fixed fragments, bound-parameter names and escaped literals
# (COPY takes no parameters); no request value is pasted in unescaped.
# ruff: noqa: S608

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from server.exports.columns import Column


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# The visit the session was started for or completed (server.schedules): its key, with the
# occurrence number (1, 2, ...) for a repeating visit; empty for a session outside any visit.
VISIT_SQL = """(
    SELECT CASE WHEN v.repeat_count > 1 THEN v.key || '#' || (vo.occurrence + 1) ELSE v.key END
    FROM visit_occurrences vo JOIN schedule_visits v ON v.id = vo.visit_id
    WHERE vo.id = a.visit_occurrence_id
)"""


# Why a submission is left out under its participant's consent, or NULL: their latest
# withdrawal's data-use choice (server.consent), while they are still withdrawn (a participant
# re-enrolled by staff consented again). "until_withdrawal" keeps what was received before.
CONSENT_REASON_SQL = """(
    SELECT CASE
        WHEN w.data_use = 'none' THEN 'withdrawn: no data may be used'
        WHEN w.data_use = 'until_withdrawal' AND s.received_at >= w.withdrawn_at
            THEN 'withdrawn: received after withdrawal'
    END
    FROM consent_withdrawals w
    WHERE w.participant_id = p.id AND p.status = 'withdrawn'
    ORDER BY w.withdrawn_at DESC, w.id DESC
    LIMIT 1
)"""


def _selection(study_id: uuid.UUID, filters: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """FROM ... WHERE of the filtered, accepted (never quarantined) submissions, before consent."""
    where = ["s.study_id = :study_id", "s.status = 'accepted'"]
    params: dict[str, Any] = {"study_id": study_id}
    if filters.get("site_ids") is not None:
        where.append("p.site_id = ANY(:site_ids)")
        params["site_ids"] = [uuid.UUID(s) for s in filters["site_ids"]]
    if filters.get("participant_statuses"):
        where.append("p.status = ANY(:statuses)")
        params["statuses"] = list(filters["participant_statuses"])
    if filters.get("date_from"):
        where.append("a.started_at >= :date_from")
        params["date_from"] = date.fromisoformat(filters["date_from"])
    if filters.get("date_to"):
        # Inclusive of the whole last day.
        where.append("a.started_at < :date_to")
        params["date_to"] = date.fromisoformat(filters["date_to"]) + timedelta(days=1)
    module_clause, module_params = module_filter(filters, alias="st")
    if module_clause != "TRUE":
        where.append(
            f"EXISTS (SELECT 1 FROM submission_tasks st "
            f"WHERE st.submission_id = s.id AND {module_clause})"
        )
        params.update(module_params)
    sql = f"""
        FROM submissions s
        JOIN participants p ON p.id = s.participant_id
        JOIN assessment_sessions a ON a.id = s.session_id
        WHERE {" AND ".join(where)}
    """
    return sql, params


def chosen_sql(study_id: uuid.UUID, filters: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """SELECT submission_id, checksum of the filtered, accepted submissions their participants'
    consent allows: the one selection an export reads and a REDCap push sends."""
    base, params = _selection(study_id, filters)
    return (
        f"SELECT s.id AS submission_id, s.checksum {base} AND {CONSENT_REASON_SQL} IS NULL",
        params,
    )


async def excluded_by_consent(
    db: AsyncSession, study_id: uuid.UUID, filters: dict[str, Any]
) -> dict[str, int]:
    """How many submissions the filters chose but consent leaves out, by reason (never who)."""
    base, params = _selection(study_id, filters)
    rows = await db.execute(
        text(f"""
            SELECT reason, count(*) FROM (SELECT {CONSENT_REASON_SQL} AS reason {base}) x
            WHERE reason IS NOT NULL GROUP BY reason ORDER BY reason
        """),
        params,
    )
    return {str(reason): int(n) for reason, n in rows}


async def select_submissions(
    db: AsyncSession, *, export_id: uuid.UUID, study_id: uuid.UUID, filters: dict[str, Any]
) -> dict[str, int]:
    """Write the filtered, accepted submissions their participants' consent allows into
    export_submissions; how many were left out under consent, by reason (never who)."""
    chosen, params = chosen_sql(study_id, filters)
    await db.execute(
        text(f"""
            INSERT INTO export_submissions (export_id, submission_id, checksum)
            SELECT :export_id, c.submission_id, c.checksum FROM ({chosen}) c
        """),
        {**params, "export_id": export_id},
    )
    return await excluded_by_consent(db, study_id, filters)


async def copy_frozen(db: AsyncSession, *, export_id: uuid.UUID, source_id: uuid.UUID) -> int:
    """A freeze's re-run: exactly the submissions the frozen export listed, if all are still
    there as they were (same raw checksum, accepted); their number, or -1 if one is not."""
    missing = await db.scalar(
        text("""
            SELECT count(*) FROM export_submissions e
            LEFT JOIN submissions s ON s.id = e.submission_id
                AND s.checksum = e.checksum AND s.status = 'accepted'
            WHERE e.export_id = :source AND s.id IS NULL
        """),
        {"source": source_id},
    )
    if missing:
        return -1
    result = await db.execute(
        text("""
            INSERT INTO export_submissions (export_id, submission_id, checksum)
            SELECT :export_id, submission_id, checksum FROM export_submissions
            WHERE export_id = :source
        """),
        {"export_id": export_id, "source": source_id},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def record_flags(
    db: AsyncSession, *, export_id: uuid.UUID, source_id: uuid.UUID | None = None
) -> None:
    """The data-quality flags the export reads, recorded once (export_quality_flags): each
    rule fired or quiet on each of its sessions; a freeze's re-run copies its source's."""
    if source_id is not None:
        await db.execute(
            text("""
                INSERT INTO export_quality_flags (export_id, session_id, rule, fired)
                SELECT :export_id, session_id, rule, fired FROM export_quality_flags
                WHERE export_id = :source
            """),
            {"export_id": export_id, "source": source_id},
        )
        return
    await db.execute(
        text("""
            INSERT INTO export_quality_flags (export_id, session_id, rule, fired)
            SELECT :export_id, q.session_id, q.rule, bool_or(q.fired) FROM quality_checks q
            WHERE q.session_id IN (
                SELECT s.session_id FROM export_submissions e
                JOIN submissions s ON s.id = e.submission_id WHERE e.export_id = :export_id)
            GROUP BY q.session_id, q.rule
        """),
        {"export_id": export_id},
    )


def module_filter(filters: dict[str, Any], *, alias: str) -> tuple[str, dict[str, Any]]:
    """[{key, version?}] -> a clause on alias.module_key / module_version."""
    modules = filters.get("modules") or []
    if not modules:
        return "TRUE", {}
    parts, params = [], {}
    for n, module in enumerate(modules):
        clause = f"{alias}.module_key = :mk{n}"
        params[f"mk{n}"] = module["key"]
        if module.get("version") is not None:
            clause += f" AND {alias}.module_version = :mv{n}"
            params[f"mv{n}"] = int(module["version"])
        parts.append(f"({clause})")
    return "(" + " OR ".join(parts) + ")", params


async def modules_in(db: AsyncSession, export_id: uuid.UUID, filters: dict[str, Any]) -> list[Any]:
    """The (module_key, module_version, module_id, n_trials) of the selected tasks, sorted."""
    clause, params = module_filter(filters, alias="st")
    rows = await db.execute(
        text(f"""
            SELECT st.module_key, st.module_version, min(st.module_id::text) AS module_id,
                   sum(st.n_trials) AS n_trials
            FROM export_submissions e
            JOIN submission_tasks st ON st.submission_id = e.submission_id
            WHERE e.export_id = :export_id AND {clause}
            GROUP BY st.module_key, st.module_version
            ORDER BY st.module_key, st.module_version
        """),
        {"export_id": export_id, **params},
    )
    return list(rows)


def trial_select_sql(
    export_id: uuid.UUID, module_key: str, module_version: int, fields: list[Column]
) -> str:
    """One module version's trials, one row per trial, in a fixed order, for COPY (asyncpg's
    copy_from_query wraps it); the values are the JSON's own text, so numbers and
    booleans are written as the device sent them. Literals are inlined: COPY takes no
    parameters."""
    values = ", ".join(f"r.{_ident(c.name)}" for c in fields)
    # json_to_record parses each trial once (->> on json re-parses it for every field); as
    # text, each value is the JSON's own spelling, a string's unescaped, null as NULL.
    record = (
        "CROSS JOIN LATERAL json_to_record(t.v) AS r("
        + ", ".join(f"{_ident(c.name)} text" for c in fields)
        + ")"
        if fields
        else ""
    )
    return f"""
        SELECT p.participant_code, si.code AS site,
               {VISIT_SQL} AS visit,
               a.id AS session_id, s.id AS submission_id, st.module_key, st.module_version,
               t.n - 1 AS trial_position{", " + values if values else ""}
        FROM export_submissions e
        JOIN submissions s ON s.id = e.submission_id
        JOIN submission_tasks st ON st.submission_id = s.id
             AND st.module_key = {_literal(module_key)}
             AND st.module_version = {int(module_version)}
        JOIN participants p ON p.id = s.participant_id
        JOIN sites si ON si.id = p.site_id
        JOIN assessment_sessions a ON a.id = s.session_id
        CROSS JOIN LATERAL json_array_elements(st.trials) WITH ORDINALITY AS t(v, n)
        {record}
        WHERE e.export_id = {_literal(str(export_id))}
        ORDER BY p.participant_code, a.started_at, a.id, s.received_at, s.id, st.position, t.n
    """
