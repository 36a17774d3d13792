"""The one clock that schedule logic reads: settable in tests, so time moves without sleeps.

Services that decide by the time of day (a visit's window open or closed) call clock.now()
rather than datetime.now(), and a test sets or advances it. One process-wide instance: tests
run in separate processes (pytest-xdist), and the `frozen_clock` fixture resets it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self) -> None:
        self._fixed: datetime | None = None

    def now(self) -> datetime:
        return self._fixed if self._fixed is not None else datetime.now(UTC)

    def set(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("the clock takes an aware datetime")
        self._fixed = at.astimezone(UTC)

    def advance(self, delta: timedelta) -> None:
        self.set(self.now() + delta)

    def reset(self) -> None:
        self._fixed = None


clock = Clock()


def now() -> datetime:
    """The current UTC time, as the clock says."""
    return clock.now()
