"""Quiet hours in the participant's own zone (zoneinfo): a reminder that falls inside waits
for the morning. Local wall-clock arithmetic, so a DST change moves nothing by an hour."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo


def is_quiet(local: time, start: time, end: time) -> bool:
    if start == end:  # no quiet hours
        return False
    if start < end:  # e.g. 13:00-14:00
        return start <= local < end
    return local >= start or local < end  # spans midnight, e.g. 21:00-08:00


def send_time(moment: datetime, timezone: str, start: time, end: time) -> datetime:
    """When a reminder due at `moment` (UTC) may go: itself, or the end of the quiet hours it
    falls in, in the participant's zone, as UTC."""
    zone = ZoneInfo(timezone)
    local = moment.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    if not is_quiet(clock, start, end):
        return moment
    day = local.date()
    if start > end and clock >= start:  # evening: the quiet hours end tomorrow morning
        day += timedelta(days=1)
    return datetime.combine(day, end, tzinfo=zone).astimezone(UTC)
