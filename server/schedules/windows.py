"""Local wall-clock times to UTC windows: the one place a visit's window is computed.

A visit is due `offset_days` after its anchor's local date, at `time_of_day` local time; its
window runs from `window_before_minutes` before that to `window_after_minutes` after, also in
local wall-clock time, so a 09:00 opening stays 09:00 local across a daylight-saving change.

The rule for local times a DST change makes odd (PEP 495's fold=0, as RFC 5545 does):
- a time that does not exist (spring forward: 02:30 in Europe/Berlin on the last Sunday of
  March) is read with the offset in force before the change, i.e. moved forward by the length
  of the gap: 02:30 becomes 03:30 local;
- a time that exists twice (fall back: 02:30 on the last Sunday of October) is the first of
  the two, the one still on summer time.

Everyone enrolled the same local day in the same zone under one protocol version shares the
same windows, so callers compute them once per (zone, anchor date, protocol) and copy them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from server.schedules.models import Repeat

STEP = {Repeat.none: timedelta(0), Repeat.daily: timedelta(days=1), Repeat.weekly: timedelta(7)}


@dataclass(frozen=True)
class VisitRule:
    """What a window needs from a visit (a plain value, so groups can be cached)."""

    visit_id: uuid.UUID
    offset_days: int
    time_of_day: time
    window_before_minutes: int
    window_after_minutes: int
    repeat: Repeat
    repeat_count: int


@dataclass(frozen=True)
class Window:
    visit_id: uuid.UUID
    occurrence: int
    start: datetime
    end: datetime


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        # A participant's zone is checked where it is set; an unknown one here reads as UTC
        # rather than stopping a whole batch.
        return ZoneInfo("UTC")


def to_utc(local: datetime, tz: ZoneInfo) -> datetime:
    """A naive local wall-clock time in tz, by the module's rule (fold=0), as UTC."""
    return local.replace(tzinfo=tz, fold=0).astimezone(UTC)


def local_date(at: datetime, tz_name: str) -> date:
    return at.astimezone(zone(tz_name)).date()


def windows(rules: tuple[VisitRule, ...], tz_name: str, anchor: date) -> list[Window]:
    tz = zone(tz_name)
    out: list[Window] = []
    for rule in rules:
        due = datetime.combine(anchor + timedelta(days=rule.offset_days), rule.time_of_day)
        for n in range(max(rule.repeat_count, 1) if rule.repeat != Repeat.none else 1):
            local = due + STEP[rule.repeat] * n  # wall-clock arithmetic: 09:00 stays 09:00
            start = to_utc(local - timedelta(minutes=rule.window_before_minutes), tz)
            end = to_utc(local + timedelta(minutes=rule.window_after_minutes), tz)
            out.append(Window(rule.visit_id, n, start, end))
    return out


@lru_cache(maxsize=65536)
def cached_windows(rules: tuple[VisitRule, ...], tz_name: str, anchor: date) -> list[Window]:
    """windows(), memoised: the bulk materialiser asks the same question thousands of times."""
    return windows(rules, tz_name, anchor)
