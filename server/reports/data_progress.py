"""What a study progress report reads, in one query, with a digest of exactly that.

Per site (the participant's site now, as the enrolment counts have it): participants by status;
visit occurrences per visit label and status (completed, missed, skipped, open, upcoming;
cancelled ones were replaced by a protocol change or a withdrawal and are not counted);
sessions, and those tied to no visit; REDCap sync failures; reminder messages failed or
skipped, with their most common reasons. The digest is of the counts the report shows, so a
visit's new status or a reminder's new outcome makes a new report, and unchanged counts reuse
the one built.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Up to three reasons per site (the most common).
_PROGRESS_SQL = text(r"""
WITH si AS (
  SELECT id, code, name FROM sites
  WHERE study_id = :study_id AND (CAST(:site_ids AS uuid[]) IS NULL OR id = ANY(:site_ids))
), pa AS (
  SELECT p.id, p.site_id, p.status FROM participants p JOIN si ON si.id = p.site_id
  WHERE p.study_id = :study_id
), rm AS (
  SELECT pa.site_id, m.status,
  -- A reason as the report shows it and groups it: the provider's words, without the
  -- moments a staleness note carries (each message's own, so no two would group), and without
  -- anything that looks like an address or a number to reach someone by. The providers keep
  -- addresses out of their reasons already (server.notifications); this is the report's own
  -- guarantee, since a report is printed and handed around.
  regexp_replace(regexp_replace(regexp_replace(
    left(coalesce(m.error, 'no reason recorded'), 300),
    '\d{4}-\d{2}-\d{2}[T ][0-9:.]+(Z|[+-]\d{2}:?\d{2})?', '[time]', 'g'),
    '[^\s<>():;,"]+@[^\s<>():;,"]+', '[address]', 'g'),
    '\+?\d[\d ()-]{6,}\d', '[number]', 'g') AS reason
  FROM reminder_messages m JOIN pa ON pa.id = m.participant_id
  WHERE m.study_id = :study_id AND m.status IN ('failed', 'skipped')
)
SELECT json_build_object(
  'study', (SELECT json_build_object('code', code, 'name', name) FROM studies
            WHERE id = :study_id),
  'sites', (SELECT coalesce(json_agg(json_build_object('id', id, 'code', code, 'name', name)
            ORDER BY code), '[]') FROM si),
  'participants', (SELECT coalesce(json_agg(x ORDER BY x.site_id, x.status), '[]') FROM (
      SELECT site_id, status, count(*) AS n FROM pa GROUP BY site_id, status) x),
  'visits', (SELECT coalesce(json_agg(x ORDER BY x.site_id, x.position, x.label, x.status),
      '[]') FROM (
      SELECT pa.site_id, v.label, min(v.position) OVER (PARTITION BY v.label) AS position,
             o.status, count(*) AS n
      FROM visit_occurrences o JOIN pa ON pa.id = o.participant_id
      JOIN schedule_visits v ON v.id = o.visit_id
      WHERE o.status <> 'cancelled' GROUP BY pa.site_id, v.label, v.position, o.status) x),
  'sessions', (SELECT coalesce(json_agg(x ORDER BY x.site_id), '[]') FROM (
      SELECT pa.site_id,
             count(*) FILTER (WHERE a.status = 'completed') AS completed,
             count(*) FILTER (WHERE a.status = 'completed' AND NOT EXISTS (
               SELECT 1 FROM visit_occurrences o
               WHERE o.participant_id = a.participant_id AND o.session_id = a.id)) AS unscheduled,
             count(*) FILTER (WHERE a.status = 'abandoned') AS abandoned
      FROM assessment_sessions a JOIN pa ON pa.id = a.participant_id GROUP BY pa.site_id) x),
  'sync_failed', (SELECT coalesce(json_agg(x ORDER BY x.site_id), '[]') FROM (
      SELECT pa.site_id, count(*) AS n FROM redcap_sync_states r
      JOIN submissions s ON s.id = r.submission_id JOIN pa ON pa.id = s.participant_id
      WHERE r.status = 'failed' GROUP BY pa.site_id) x),
  'reminders', (SELECT coalesce(json_agg(x ORDER BY x.site_id, x.status), '[]') FROM (
      SELECT site_id, status, count(*) AS n FROM rm GROUP BY site_id, status) x),
  'reasons', (SELECT coalesce(json_agg(x ORDER BY x.site_id, x.rank), '[]') FROM (
      SELECT site_id, status, reason, n,
             row_number() OVER (PARTITION BY site_id ORDER BY n DESC, status, reason) AS rank
      FROM (SELECT site_id, status, reason, count(*) AS n FROM rm
            GROUP BY site_id, status, reason) g) x WHERE x.rank <= 3)
)::text
""")


@dataclass(frozen=True)
class Reason:
    status: str  # failed or skipped
    reason: str  # as grouped and shown (see _REASON)
    count: int


@dataclass
class SiteProgress:
    code: str
    name: str
    participants: dict[str, int] = field(default_factory=dict)  # status -> count
    # visit label -> status -> occurrences; labels in protocol order
    visits: dict[str, dict[str, int]] = field(default_factory=dict)
    completed_sessions: int = 0
    unscheduled_sessions: int = 0  # completed, tied to no visit
    abandoned: int = 0
    sync_failed: int = 0
    reminders: dict[str, int] = field(default_factory=dict)  # failed / skipped -> count
    reasons: list[Reason] = field(default_factory=list)  # most common first


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
        by_status = sites[row["site_id"]].visits.setdefault(row["label"], {})
        by_status[row["status"]] = by_status.get(row["status"], 0) + row["n"]
    for row in raw["sessions"]:
        site = sites[row["site_id"]]
        site.completed_sessions = row["completed"]
        site.unscheduled_sessions = row["unscheduled"]
        site.abandoned = row["abandoned"]
    for row in raw["sync_failed"]:
        sites[row["site_id"]].sync_failed = row["n"]
    for row in raw["reminders"]:
        sites[row["site_id"]].reminders[row["status"]] = row["n"]
    for row in raw["reasons"]:
        sites[row["site_id"]].reasons.append(Reason(row["status"], row["reason"], row["n"]))
    study = raw["study"]
    return ProgressData(
        f"{study['name']} ({study['code']})",
        list(sites.values()),
        hashlib.sha256(raw_text.encode()).hexdigest(),
    )
