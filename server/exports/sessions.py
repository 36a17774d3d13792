"""The session-level wide table: one row a session, the server's summary metrics per module,
the client's where they differ, data-quality flags and scorer versions.

Streamed, like the trials: its columns come first from one aggregate query (which metrics,
flags and scorers the export's sessions hold), then its rows from a server-side cursor in
the file's order, a batch of sessions at a time, so memory stays flat as the study grows.
Scores are read as of the export's data_as_of, so a freeze's re-run reads the scores its
export read (scores are added, never replaced); flags from those the export recorded when
its build started (export_quality_flags: checks are recomputed, not added).
"""

# SQL text is assembled from fixed fragments, bound-parameter names and escaped literals
# (COPY takes no parameters); no request value is pasted in unescaped.
# ruff: noqa: S608

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from server.exports.columns import NUMBER, STRING, Column
from server.exports.query import VISIT_SQL, module_filter

# Sessions a batch: a few MB of Python rows however many sessions the export holds.
BATCH_SESSIONS = 2_000


def _picked(clause: str) -> str:
    """Each session's task of each module (the latest submission's) with its score as of
    :as_of: the rows the table is made of."""
    return f"""
        SELECT DISTINCT ON (a.id, st.module_key, st.module_version)
            p.participant_code, si.code AS site, {VISIT_SQL} AS visit, a.id AS session_id,
            a.started_at, a.ended_at, st.module_key, st.module_version,
            st.summary AS client_summary,
            -- An empty server summary counts as none: the client's metrics name the columns.
            CASE WHEN ts.server_summary <> '{{}}'::jsonb THEN ts.server_summary END
                AS server_summary,
            ts.comparison, ts.scorer_key, ts.scorer_version
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
    """


# Per module version and metric: whether every server value is a number, whether the client's
# differed anywhere; the scorers; and the quality rules checked on these sessions.
_LAYOUT = """
    WITH picked AS ({picked})
    SELECT 'metric' AS kind, module_key, module_version, m.key AS name,
           bool_and(server_summary IS NULL
                    OR jsonb_typeof(server_summary -> m.key) IN ('number', 'null')
                    OR NOT server_summary ? m.key) AS numeric,
           bool_or(comparison -> m.key ->> 'mismatch' = 'true') AS mismatch
    FROM picked, jsonb_object_keys(coalesce(server_summary, client_summary, '{{}}'::jsonb)) m(key)
    GROUP BY module_key, module_version, m.key
    UNION ALL
    SELECT DISTINCT 'scorer', module_key, module_version, scorer_key || '@' || scorer_version,
           NULL::boolean, NULL::boolean
    FROM picked WHERE scorer_key IS NOT NULL
    UNION ALL
    SELECT DISTINCT 'flag', '', 0, q.rule, NULL::boolean, NULL::boolean
    FROM export_quality_flags q
    WHERE q.export_id = :export_id AND q.session_id IN (SELECT session_id FROM picked)
"""

_ROWS = """
    WITH picked AS ({picked})
    SELECT pk.*, (
        SELECT jsonb_object_agg(q.rule, q.fired) FROM export_quality_flags q
        WHERE q.export_id = :export_id AND q.session_id = pk.session_id
    ) AS flags
    FROM picked pk
    ORDER BY pk.participant_code COLLATE "C", pk.started_at NULLS FIRST, pk.session_id,
             pk.module_key, pk.module_version
"""


@dataclass
class Layout:
    columns: list[Column]
    # Scorer versions per module (key@version), for the manifest.
    scorers: dict[str, list[str]] = field(default_factory=dict)


def _prefix(key: str, version: int, modules: dict[tuple[str, int], Any]) -> str:
    # The version is in the name only where the export holds two versions of one module.
    versions = sum(1 for k, _ in modules if k == key)
    return key if versions <= 1 else f"{key}_v{version}"


async def session_layout(
    db: AsyncSession,
    *,
    export_id: uuid.UUID,
    filters: dict[str, Any],
    data_as_of: datetime,
    modules: dict[tuple[str, int], Any],
) -> Layout:
    """The table's columns and the scorers behind them, from one aggregate query."""
    clause, params = module_filter(filters, alias="st")
    found = await db.execute(
        text(_LAYOUT.format(picked=_picked(clause))),
        {"export_id": export_id, "as_of": data_as_of, **params},
    )
    metrics: dict[tuple[str, int], list[tuple[str, bool, bool]]] = {}
    scorers: dict[tuple[str, int], list[str]] = {}
    flags: list[str] = []
    for kind, key, version, name, numeric, mismatch in found:
        if kind == "metric":
            metrics.setdefault((key, version), []).append((name, bool(numeric), bool(mismatch)))
        elif kind == "scorer":
            scorers.setdefault((key, version), []).append(name)
        else:
            flags.append(name)
    columns = [
        Column("participant_code", "Participant code"),
        Column("site", "Site code"),
        Column("visit", "Visit (schedule)"),
        Column("session_id", "Assessment session id"),
        Column("session_started_at", "Session start (server clock, ISO 8601 UTC)"),
        Column("session_ended_at", "Session end (server clock, ISO 8601 UTC)"),
    ]
    for (key, version), module in sorted(modules.items()):
        prefix = _prefix(key, version, modules)
        info_by_key = {m["key"]: m for m in (module.metrics if module is not None else [])}
        for metric, numeric, mismatch in sorted(metrics.get((key, version), [])):
            info = info_by_key.get(metric, {})
            kind = NUMBER if numeric else STRING
            label, unit = str(info.get("label", metric)), str(info.get("unit", ""))
            columns.append(Column(f"{prefix}_{metric}", f"{label} (server)", kind, unit, key,
                                  version))  # fmt: skip
            if mismatch:
                columns.append(Column(f"{prefix}_{metric}_client",
                                      f"{label} (client's, where it differs)", kind, unit, key,
                                      version))  # fmt: skip
        if (key, version) in scorers:
            columns.append(Column(f"{prefix}_scorer", "Scorer (key@version)", STRING, "", key,
                                  version))  # fmt: skip
    for rule in sorted(flags):
        columns.append(Column(f"qc_{rule}", f"Quality flag: {rule} fired", "integer",
                              value_labels={0: "quiet", 1: "fired"}))  # fmt: skip
    return Layout(
        columns,
        {f"{k}@{v}": sorted(names) for (k, v), names in sorted(scorers.items())},
    )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


async def session_rows(
    db: AsyncSession,
    *,
    export_id: uuid.UUID,
    filters: dict[str, Any],
    data_as_of: datetime,
    modules: dict[tuple[str, int], Any],
    columns: list[Column],
) -> AsyncIterator[list[list[Any]]]:
    """The table's rows in file order (participant, start, session), BATCH_SESSIONS a batch."""
    clause, params = module_filter(filters, alias="st")
    names = [c.name for c in columns]
    result = await db.stream(
        text(_ROWS.format(picked=_picked(clause))).execution_options(yield_per=1_000),
        {"export_id": export_id, "as_of": data_as_of, **params},
    )
    batch: list[list[Any]] = []
    row: dict[str, Any] = {}
    async for t in result.mappings():
        if row.get("session_id") != str(t["session_id"]):
            if row:
                batch.append([row.get(n) for n in names])
                if len(batch) >= BATCH_SESSIONS:
                    yield batch
                    batch = []
            row = _session(t)
        prefix = _prefix(t["module_key"], t["module_version"], modules)
        server = t["server_summary"]
        comparison = t["comparison"] or {}
        for metric in server or t["client_summary"] or {}:
            row[f"{prefix}_{metric}"] = server.get(metric) if server else None
            if (comparison.get(metric) or {}).get("mismatch"):
                row[f"{prefix}_{metric}_client"] = t["client_summary"].get(metric)
        if t["scorer_key"]:
            row[f"{prefix}_scorer"] = f"{t['scorer_key']}@{t['scorer_version']}"
    if row:
        batch.append([row.get(n) for n in names])
    if batch:
        yield batch


def _session(t: Any) -> dict[str, Any]:
    row = {
        "participant_code": t["participant_code"],
        "site": t["site"],
        "visit": t["visit"],
        "session_id": str(t["session_id"]),
        "session_started_at": _iso(t["started_at"]),
        "session_ended_at": _iso(t["ended_at"]),
    }
    for rule, fired in (t["flags"] or {}).items():
        row[f"qc_{rule}"] = int(fired)
    return row
