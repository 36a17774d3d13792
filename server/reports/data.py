"""What a report reads, each in one query, as plain values, with a digest of exactly that.

The digest is part of a report's key: the same request over the same data is the same
report, and anything new (a session, a rescore, a quality flag, a visit's status) makes a new
one. A participant's data is here; what a visit is, in data_visits; study progress, in
data_progress.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.modules.models import Module
from server.reports.data_visits import Visit, visit_points

# Visits: the participant's visit occurrences (server.reports.data_visits says what a visit
# is), each with the start of the completed session that completed it. Sessions: completed ones.
# Scores: each task's newest scorer version. Flags: the fired quality checks. Everything a
# report shows is in this one text, so its digest changes with any of it (a session, a
# rescore, a flag, a visit's status or session).
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
), vo AS (
  SELECT o.status, o.occurrence, o.window_start, o.window_end, o.session_id,
         a.started_at, v.label, v.repeat <> 'none' AS repeats, pr.version, v.position,
         coalesce(a.started_at, o.window_start) AS at
  FROM visit_occurrences o
  JOIN schedule_visits v ON v.id = o.visit_id
  JOIN schedule_protocols pr ON pr.id = o.protocol_id
  LEFT JOIN assessment_sessions a ON a.id = o.session_id AND a.status = 'completed'
  WHERE o.participant_id = :pid AND o.status <> 'cancelled'
    AND (CAST(:sid AS uuid) IS NULL OR o.session_id = CAST(:sid AS uuid))
), sc AS (
  SELECT DISTINCT ON (t.submission_id, t.position)
         t.session_id, t.submission_id, t.position, t.module_key, t.module_version,
         t.server_summary
  FROM task_scores t JOIN ses ON ses.id = t.session_id
  ORDER BY t.submission_id, t.position, t.computed_at DESC
)
SELECT json_build_object(
  'participant', (SELECT row_to_json(p) FROM p),
  'scheduled', EXISTS (SELECT 1 FROM visit_occurrences WHERE participant_id = :pid),
  'visits', (SELECT coalesce(json_agg(json_build_object(
      'status', vo.status, 'occurrence', vo.occurrence, 'window_start', vo.window_start,
      'window_end', vo.window_end, 'session_id', vo.session_id, 'started_at', vo.started_at,
      'label', vo.label, 'repeats', vo.repeats)
      ORDER BY vo.version, vo.position, vo.occurrence, vo.window_start), '[]') FROM vo
      WHERE (CAST(:since AS timestamptz) IS NULL OR vo.at >= CAST(:since AS timestamptz))
        AND (CAST(:until AS timestamptz) IS NULL OR vo.at < CAST(:until AS timestamptz))),
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
class ParticipantData:
    header: Header
    visits: list[Visit]
    digest: str
    scheduled: bool = False  # on a visit schedule: the visits are the schedule's


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
    return ParticipantData(header, visit_points(raw), digest, raw["scheduled"])


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
