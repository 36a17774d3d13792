"""The session-level wide table: one row a session, the server's summary metrics per module,
the client's where they differ, data-quality flags and scorer versions.

Small (a row a session), so built in memory; scores are read as of the export's data_as_of,
so a freeze's re-run reads the scores its export read (scores are added, never replaced).
"""

# SQL text is assembled from fixed fragments, bound-parameter names and escaped literals
# (COPY takes no parameters); no request value is pasted in unescaped.
# ruff: noqa: S608

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from server.exports.columns import NUMBER, STRING, Column
from server.exports.query import VISIT_SQL, module_filter


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


async def session_table(
    db: AsyncSession,
    *,
    export_id: uuid.UUID,
    filters: dict[str, Any],
    data_as_of: datetime,
    modules: dict[tuple[str, int], Any],
) -> tuple[list[Column], list[list[Any]], dict[str, list[str]]]:
    """(columns, rows, scorer versions per module) of the sessions the export read."""
    clause, params = module_filter(filters, alias="st")
    tasks = await db.execute(
        text(f"""
            SELECT DISTINCT ON (a.id, st.module_key, st.module_version)
                p.participant_code, si.code AS site, {VISIT_SQL} AS visit, a.id AS session_id,
                a.started_at, a.ended_at, st.module_key, st.module_version,
                st.summary AS client_summary, ts.server_summary, ts.comparison,
                ts.scorer_key, ts.scorer_version
            FROM export_submissions e
            JOIN submissions s ON s.id = e.submission_id
            JOIN submission_tasks st ON st.submission_id = s.id AND {clause}
            JOIN participants p ON p.id = s.participant_id
            JOIN sites si ON si.id = p.site_id
            JOIN assessment_sessions a ON a.id = s.session_id
            LEFT JOIN LATERAL (
                SELECT * FROM task_scores ts
                WHERE ts.submission_id = s.id AND ts.position = st.position
                  AND ts.computed_at <= :as_of
                ORDER BY ts.computed_at DESC, ts.id DESC LIMIT 1
            ) ts ON TRUE
            WHERE e.export_id = :export_id
            ORDER BY a.id, st.module_key, st.module_version, s.received_at DESC, s.id DESC
        """),
        {"export_id": export_id, "as_of": data_as_of, **params},
    )
    sessions: dict[uuid.UUID, dict[str, Any]] = {}
    scorers: dict[str, set[str]] = {}
    for t in tasks.mappings():
        row = sessions.setdefault(
            t["session_id"],
            {
                "participant_code": t["participant_code"],
                "site": t["site"],
                "visit": t["visit"],
                "session_id": str(t["session_id"]),
                "session_started_at": _iso(t["started_at"]),
                "session_ended_at": _iso(t["ended_at"]),
            },
        )
        prefix = _prefix(t["module_key"], t["module_version"], modules)
        server = t["server_summary"] or {}
        comparison = t["comparison"] or {}
        for metric in t["server_summary"] or t["client_summary"] or {}:
            row[f"{prefix}_{metric}"] = server.get(metric) if t["server_summary"] else None
            if comparison.get(metric, {}).get("mismatch"):
                row[f"{prefix}_{metric}_client"] = t["client_summary"].get(metric)
        if t["scorer_key"]:
            scorer = f"{t['scorer_key']}@{t['scorer_version']}"
            row[f"{prefix}_scorer"] = scorer
            scorers.setdefault(f"{t['module_key']}@{t['module_version']}", set()).add(scorer)
    flags = await db.execute(
        text("""
            SELECT q.session_id, q.rule, bool_or(q.fired) AS fired FROM quality_checks q
            WHERE q.session_id IN (
                SELECT s.session_id FROM export_submissions e
                JOIN submissions s ON s.id = e.submission_id WHERE e.export_id = :export_id)
            GROUP BY q.session_id, q.rule
        """),
        {"export_id": export_id},
    )
    for f in flags:
        if f.session_id in sessions:
            sessions[f.session_id][f"qc_{f.rule}"] = int(f.fired)
    ordered = sorted(
        sessions.values(),
        key=lambda r: (r["participant_code"], r["session_started_at"] or "", r["session_id"]),
    )
    columns = _columns(ordered, modules)
    rows = [[r.get(c.name) for c in columns] for r in ordered]
    return columns, rows, {k: sorted(v) for k, v in sorted(scorers.items())}


def _prefix(key: str, version: int, modules: dict[tuple[str, int], Any]) -> str:
    # The version is in the name only where the export holds two versions of one module.
    versions = sum(1 for k, _ in modules if k == key)
    return key if versions <= 1 else f"{key}_v{version}"


def _columns(rows: list[dict[str, Any]], modules: dict[tuple[str, int], Any]) -> list[Column]:
    columns = [
        Column("participant_code", "Participant code"),
        Column("site", "Site code"),
        Column("visit", "Visit (schedule)"),
        Column("session_id", "Assessment session id"),
        Column("session_started_at", "Session start (server clock, ISO 8601 UTC)"),
        Column("session_ended_at", "Session end (server clock, ISO 8601 UTC)"),
    ]
    present = {name for r in rows for name in r}
    for (key, version), module in sorted(modules.items()):
        prefix = _prefix(key, version, modules)
        metrics = {m["key"]: m for m in (module.metrics if module is not None else [])}
        names = sorted(
            {n[len(prefix) + 1 :] for n in present if n.startswith(prefix + "_")} - {"scorer"}
        )
        for metric in [m for m in names if not m.endswith("_client")]:
            info = metrics.get(metric, {})
            kind = NUMBER if _numeric(rows, f"{prefix}_{metric}") else STRING
            label = str(info.get("label", metric))
            columns.append(Column(f"{prefix}_{metric}", f"{label} (server)", kind,
                                  str(info.get("unit", "")), key, version))  # fmt: skip
            if f"{metric}_client" in names:
                columns.append(Column(f"{prefix}_{metric}_client",
                                      f"{label} (client's, where it differs)", kind,
                                      str(info.get("unit", "")), key, version))  # fmt: skip
        if f"{prefix}_scorer" in present:
            columns.append(Column(f"{prefix}_scorer", "Scorer (key@version)", STRING, "", key,
                                  version))  # fmt: skip
    for rule in sorted(n[3:] for n in present if n.startswith("qc_")):
        columns.append(Column(f"qc_{rule}", f"Quality flag: {rule} fired", "integer",
                              value_labels={0: "quiet", 1: "fired"}))  # fmt: skip
    return columns


def _numeric(rows: list[dict[str, Any]], name: str) -> bool:
    values = [r.get(name) for r in rows if r.get(name) is not None]
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
