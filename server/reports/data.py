"""What a report reads, each in one query, as plain values, with a digest of exactly that.

The digest is part of a report's key: the same request over the same data is the same
report, and anything new (a session, a rescore, a quality flag) makes a new one.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.modules.models import Module

# Scores: each task's newest scorer version. Flags: the fired quality checks.
_PARTICIPANT_SQL = text("""
WITH p AS (
  SELECT p.id, p.participant_code, p.site_id, s.code AS site_code, s.name AS site_name,
         st.code AS study_code, st.name AS study_name
  FROM participants p JOIN sites s ON s.id = p.site_id JOIN studies st ON st.id = p.study_id
  WHERE p.id = :pid AND p.study_id = :study_id
), ses AS (
  SELECT a.id, a.started_at, a.ended_at FROM assessment_sessions a
  WHERE a.participant_id = :pid AND a.status = 'completed'
    AND (CAST(:sid AS uuid) IS NULL OR a.id = CAST(:sid AS uuid))
    AND (CAST(:since AS timestamptz) IS NULL OR a.started_at >= CAST(:since AS timestamptz))
    AND (CAST(:until AS timestamptz) IS NULL OR a.started_at < CAST(:until AS timestamptz))
), sc AS (
  SELECT DISTINCT ON (t.submission_id, t.position)
         t.session_id, t.submission_id, t.position, t.module_key, t.module_version,
         t.server_summary
  FROM task_scores t JOIN ses ON ses.id = t.session_id
  ORDER BY t.submission_id, t.position, t.computed_at DESC
)
SELECT json_build_object(
  'participant', (SELECT row_to_json(p) FROM p),
  'sessions', (SELECT coalesce(json_agg(json_build_object(
      'id', ses.id, 'started_at', ses.started_at, 'ended_at', ses.ended_at)
      ORDER BY ses.started_at, ses.id), '[]') FROM ses),
  'scores', (SELECT coalesce(json_agg(json_build_object(
      'session_id', sc.session_id, 'module_key', sc.module_key,
      'module_version', sc.module_version, 'summary', sc.server_summary)
      ORDER BY sc.session_id, sc.submission_id, sc.position), '[]') FROM sc),
  'flags', (SELECT coalesce(json_agg(json_build_object(
      'session_id', q.session_id, 'module_key', q.module_key, 'rule', q.rule,
      'observed', q.observed) ORDER BY q.session_id, q.module_key, q.rule), '[]')
      FROM quality_checks q JOIN ses ON ses.id = q.session_id WHERE q.fired)
)::text
""")


@dataclass(frozen=True)
class Header:
    study: str
    site: str
    participant_code: str
    site_id: uuid.UUID


@dataclass
class Visit:
    """One visit of the participant: its number, its session, and per module its metrics."""

    number: int
    session_id: uuid.UUID
    started_at: datetime
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # module key -> summary
    versions: dict[str, int] = field(default_factory=dict)  # module key -> version
    flags: list[tuple[str | None, str]] = field(default_factory=list)  # (module key, rule)

    def flagged(self, module_key: str | None = None) -> bool:
        return any(m is None or module_key is None or m == module_key for m, _ in self.flags)


@dataclass
class ParticipantData:
    header: Header
    visits: list[Visit]
    digest: str


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value)


# VISITS: the one place that says what a visit is. Until schedules land, a participant's
# completed sessions in time order are their visits (visit n = the n-th completed session);
# the lead switches this to the schedule's visits at merge.
def visit_points(raw: dict[str, Any]) -> list[Visit]:
    visits: dict[str, Visit] = {}
    for n, s in enumerate(raw["sessions"], start=1):
        visits[s["id"]] = Visit(n, uuid.UUID(s["id"]), _when(s["started_at"]))
    for score in raw["scores"]:
        visit = visits[score["session_id"]]
        visit.scores[score["module_key"]] = score["summary"]
        visit.versions[score["module_key"]] = score["module_version"]
    for flag in raw["flags"]:
        visits[flag["session_id"]].flags.append((flag["module_key"], flag["rule"]))
    return list(visits.values())


def _bound(day: date | None) -> datetime | None:
    """A date as the start of that day, UTC (asyncpg takes datetimes for timestamptz)."""
    return None if day is None else datetime.combine(day, datetime.min.time(), tzinfo=UTC)


async def participant_data(
    db: AsyncSession,
    *,
    study_id: uuid.UUID,
    participant_id: uuid.UUID,
    session_id: uuid.UUID | None = None,
    since: date | None = None,
    until: date | None = None,
) -> ParticipantData | None:
    """The participant's completed sessions (one of them, for a session report), their scores
    and flags, in one round trip; None when the participant is not the study's."""
    raw_text = await db.scalar(
        _PARTICIPANT_SQL,
        {
            "pid": participant_id,
            "study_id": study_id,
            "sid": None if session_id is None else str(session_id),
            "since": _bound(since),
            "until": _bound(until),
        },
    )
    raw = orjson.loads(raw_text)
    p = raw["participant"]
    if p is None:
        return None
    header = Header(
        study=f"{p['study_name']} ({p['study_code']})",
        site=f"{p['site_name']} ({p['site_code']})",
        participant_code=p["participant_code"],
        site_id=uuid.UUID(p["site_id"]),
    )
    digest = hashlib.sha256(raw_text.encode()).hexdigest()
    return ParticipantData(header, visit_points(raw), digest)


# Published module versions never change: their metric definitions are read once a process.
_METRICS: dict[tuple[str, int], list[dict[str, Any]]] = {}
_NAMES: dict[str, str] = {}
_QUESTIONNAIRES: set[str] = set()


async def module_metrics(
    db: AsyncSession, versions: set[tuple[str, int]]
) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Metric definitions by (module key, version); published ones are kept for the process."""
    found: dict[tuple[str, int], list[dict[str, Any]]] = {}
    missing = versions - _METRICS.keys()
    if missing:
        rows = await db.execute(
            select(
                Module.key, Module.version, Module.name, Module.metrics, Module.status, Module.kind
            ).where(Module.key.in_({k for k, _ in missing}))
        )
        for key, version, name, metrics, status, kind in rows:
            found[(key, version)] = metrics
            if kind == "questionnaire":
                _QUESTIONNAIRES.add(key)
            if status == "published":
                _METRICS[(key, version)] = metrics
            _NAMES.setdefault(key, name)
    return {v: _METRICS.get(v) or found.get(v, []) for v in versions}


def module_name(key: str) -> str:
    return _NAMES.get(key, key)


def is_questionnaire(key: str) -> bool:
    return key in _QUESTIONNAIRES


def digest_of(*parts: Any) -> str:
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


# VISITS: here too a visit is the n-th completed session (as visit_points() says); switch both.
_PROGRESS_SQL = text("""
WITH si AS (
  SELECT id, code, name FROM sites
  WHERE study_id = :study_id AND (CAST(:site_ids AS uuid[]) IS NULL OR id = ANY(:site_ids))
), pa AS (
  SELECT p.id, p.site_id, p.status FROM participants p JOIN si ON si.id = p.site_id
  WHERE p.study_id = :study_id
), vi AS (
  SELECT pa.site_id,
         row_number() OVER (PARTITION BY a.participant_id ORDER BY a.started_at, a.id) AS n
  FROM assessment_sessions a JOIN pa ON pa.id = a.participant_id WHERE a.status = 'completed'
)
SELECT json_build_object(
  'study', (SELECT json_build_object('code', code, 'name', name) FROM studies
            WHERE id = :study_id),
  'sites', (SELECT coalesce(json_agg(json_build_object('id', id, 'code', code, 'name', name)
            ORDER BY code), '[]') FROM si),
  'participants', (SELECT coalesce(json_agg(x ORDER BY x.site_id, x.status), '[]') FROM (
      SELECT site_id, status, count(*) AS n FROM pa GROUP BY site_id, status) x),
  'visits', (SELECT coalesce(json_agg(x ORDER BY x.site_id, x.visit), '[]') FROM (
      SELECT site_id, n AS visit, count(*) AS n FROM vi GROUP BY site_id, n) x),
  'abandoned', (SELECT coalesce(json_agg(x ORDER BY x.site_id), '[]') FROM (
      SELECT pa.site_id, count(*) AS n FROM assessment_sessions a JOIN pa
      ON pa.id = a.participant_id WHERE a.status = 'abandoned' GROUP BY pa.site_id) x),
  'sync_failed', (SELECT coalesce(json_agg(x ORDER BY x.site_id), '[]') FROM (
      SELECT pa.site_id, count(*) AS n FROM redcap_sync_states r
      JOIN submissions s ON s.id = r.submission_id JOIN pa ON pa.id = s.participant_id
      WHERE r.status = 'failed' GROUP BY pa.site_id) x)
)::text
""")


@dataclass
class SiteProgress:
    code: str
    name: str
    participants: dict[str, int] = field(default_factory=dict)  # status -> count
    visits: dict[int, int] = field(default_factory=dict)  # visit number -> completed
    abandoned: int = 0
    sync_failed: int = 0


@dataclass
class ProgressData:
    study: str
    sites: list[SiteProgress]
    digest: str


async def progress_data(
    db: AsyncSession, *, study_id: uuid.UUID, site_ids: list[uuid.UUID] | None
) -> ProgressData:
    raw_text = await db.scalar(_PROGRESS_SQL, {"study_id": study_id, "site_ids": site_ids})
    raw = orjson.loads(raw_text)
    sites = {s["id"]: SiteProgress(s["code"], s["name"]) for s in raw["sites"]}
    for row in raw["participants"]:
        sites[row["site_id"]].participants[row["status"]] = row["n"]
    for row in raw["visits"]:
        sites[row["site_id"]].visits[row["visit"]] = row["n"]
    for row in raw["abandoned"]:
        sites[row["site_id"]].abandoned = row["n"]
    for row in raw["sync_failed"]:
        sites[row["site_id"]].sync_failed = row["n"]
    study = raw["study"]
    return ProgressData(
        f"{study['name']} ({study['code']})",
        list(sites.values()),
        hashlib.sha256(raw_text.encode()).hexdigest(),
    )
