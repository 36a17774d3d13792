"""What a visit is in a report: the one place that says it.

A participant on a visit schedule has the schedule's visits: their visit occurrences (all but
cancelled ones, which a protocol change or a withdrawal replaced) in protocol order, each with
its label, window and status, and the results of the session that completed it
(visit_occurrences.session_id). A visit missed or skipped has no session: it is listed with its
status and no values, and a chart leaves a gap there.

Sessions tied to no visit keep the meaning reports gave them before schedules existed, so old
data still reports: for a participant on no protocol, every completed session is a visit, in
time order ("Session n" is the n-th completed session); for a participant on one, a completed
session outside every visit (an extra, or one that ended outside the window) is listed as an
unscheduled session at its place in time among the scheduled visits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Visits a module table and chart show: those that happened, or should have and did not.
# Open and upcoming visits are listed in the visit table only.
MISSED = ("missed", "skipped")
SHOWN = ("completed", *MISSED)
UNSCHEDULED = "Unscheduled session"


@dataclass
class Visit:
    """One visit: its place in the report, what it is, and per module its results."""

    number: int  # 1-based, in report order: the tables' "#" and the charts' x axis
    label: str
    status: str  # a VisitStatus value; "completed" for a session tied to no visit
    session_id: uuid.UUID | None = None
    started_at: datetime | None = None  # the completing session's start
    window: tuple[datetime, datetime] | None = None  # None: a session tied to no visit
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # module key -> summary
    versions: dict[str, int] = field(default_factory=dict)  # module key -> version
    flags: list[tuple[str | None, str]] = field(default_factory=list)  # (module key, rule)

    @property
    def when(self) -> datetime:
        """The session's start, else the window's (a visit always has one or the other)."""
        if self.started_at is not None:
            return self.started_at
        assert self.window is not None
        return self.window[0]

    @property
    def missed(self) -> bool:
        return self.status in MISSED

    @property
    def shown(self) -> bool:
        return self.status in SHOWN

    def flagged(self, module_key: str | None = None) -> bool:
        return any(m is None or module_key is None or m == module_key for m, _ in self.flags)


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _when(value: str | None) -> datetime | None:
    return None if value is None else _at(value)


def _scheduled(rows: list[dict[str, Any]]) -> list[Visit]:
    """The schedule's visits, in the order the query gives (protocol version, position,
    occurrence). A repeating visit's occurrences are told apart by their number."""
    visits = []
    for row in rows:
        label = row["label"] + (f" ({row['occurrence'] + 1})" if row["repeats"] else "")
        started = _when(row["started_at"])
        window = (_at(row["window_start"]), _at(row["window_end"]))
        # A visit's session counts once it is a completed session (the query joins only those).
        session = None if started is None else uuid.UUID(row["session_id"])
        visits.append(Visit(0, label, row["status"], session, started, window))
    return visits


def _place(visits: list[Visit], extra: Visit) -> None:
    """An unscheduled session goes after the last visit that came before it in time."""
    at = 0
    for i, visit in enumerate(visits):
        if visit.when <= extra.when:
            at = i + 1
    visits.insert(at, extra)


def visit_points(raw: dict[str, Any]) -> list[Visit]:
    """The participant's visits from the report query's rows (server.reports.data)."""
    visits = _scheduled(raw["visits"])
    tied = {v.session_id for v in visits if v.session_id is not None}
    extras = [s for s in raw["sessions"] if uuid.UUID(s["id"]) not in tied]
    for n, s in enumerate(extras, start=1):
        started = _at(s["started_at"])
        label = UNSCHEDULED if raw["scheduled"] else f"Session {n}"
        _place(visits, Visit(0, label, "completed", uuid.UUID(s["id"]), started))
    by_session: dict[str, Visit] = {}
    for number, visit in enumerate(visits, start=1):
        visit.number = number
        if visit.session_id is not None:
            by_session[str(visit.session_id)] = visit
    for score in raw["scores"]:
        found = by_session.get(score["session_id"])
        if found is not None:
            found.scores[score["module_key"]] = score["summary"]
            found.versions[score["module_key"]] = score["module_version"]
    for flag in raw["flags"]:
        found = by_session.get(flag["session_id"])
        if found is not None:
            found.flags.append((flag["module_key"], flag["rule"]))
    return visits
