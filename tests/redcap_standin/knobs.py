"""Test knobs: delay, a hold on record imports, injected failures, call log and hit counter
(all thread-safe)."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

FAILURE_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>{status} {reason}</title></head>"
    "<body><h1>{reason}</h1><p>The server is temporarily unable to service your request."
    "</p></body></html>\n"
)


@dataclass(frozen=True)
class CallRecord:
    """One API call as the stand-in saw it."""

    content: str
    action: str  # "export", "import" or "delete"
    rows: int  # rows imported / exported, records deleted
    status: int
    started_at: float  # time.time() when the request arrived
    finished_at: float
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Failure:
    status: int
    after_processing: bool = False  # carry the call out, then lose the answer


class Knobs:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._delay = 0.0
        self._fail_status: int | None = None
        self._fail_after = False
        self._fail_remaining: int | None = None  # None = until cleared
        self._fail_content: str | None = None  # None = any call
        self._calls: list[CallRecord] = []
        self._hits = 0
        # Record imports wait while this is clear: a test holds REDCap mid-import as long as
        # it needs (a worker killed, Redis restarted), then lets the call go on.
        self._released = threading.Event()
        self._released.set()
        self._holding = 0

    # ----- delay -------------------------------------------------------------------------------
    @property
    def delay_seconds(self) -> float:
        with self._lock:
            return self._delay

    @delay_seconds.setter
    def delay_seconds(self, value: float) -> None:
        with self._lock:
            self._delay = max(0.0, float(value))

    # ----- hold -------------------------------------------------------------------------------
    def hold_imports(self, on: bool) -> None:
        if on:
            self._released.clear()
        else:
            self._released.set()

    def wait_if_held(self, stopping: threading.Event) -> bool:
        """Wait while imports are held; False if the stand-in stops meanwhile."""
        if self._released.is_set():
            return True
        with self._lock:
            self._holding += 1
        try:
            while not self._released.wait(0.02):
                if stopping.is_set():
                    return False
            return True
        finally:
            with self._lock:
                self._holding -= 1

    # ----- injected failures -------------------------------------------------------------------
    @property
    def fail_with_status(self) -> int | None:
        with self._lock:
            return self._fail_status

    @fail_with_status.setter
    def fail_with_status(self, status: int | None) -> None:
        self.fail(status, times=None)

    def fail(
        self,
        status: int | None,
        times: int | None = None,
        *,
        after_processing: bool = False,
        content: str | None = None,
    ) -> None:
        """Answer the next `times` calls (all calls if None) with `status` and an HTML page;
        with `content`, only calls of that content (the others are answered as usual)."""
        with self._lock:
            self._fail_status = status
            self._fail_remaining = times if status is not None else None
            self._fail_after = after_processing and status is not None
            self._fail_content = content if status is not None else None

    def clear_failure(self) -> None:
        self.fail(None)

    def take_failure(self, content: str = "") -> Failure | None:
        """How to fail this call, if at all; consumes one of the remaining failures."""
        with self._lock:
            if self._fail_status is None:
                return None
            if self._fail_content is not None and content != self._fail_content:
                return None
            failure = Failure(self._fail_status, self._fail_after)
            if self._fail_remaining is not None:
                self._fail_remaining -= 1
                if self._fail_remaining <= 0:
                    self._fail_status, self._fail_remaining = None, None
                    self._fail_after, self._fail_content = False, None
            return failure

    # ----- call log ----------------------------------------------------------------------------
    def count_hit(self) -> None:
        with self._lock:
            self._hits += 1

    def log(self, call: CallRecord) -> None:
        with self._lock:
            self._calls.append(call)

    @property
    def hits(self) -> int:
        with self._lock:
            return self._hits

    @property
    def calls(self) -> list[CallRecord]:
        with self._lock:
            return list(self._calls)

    def reset(self) -> None:
        with self._lock:
            self._delay = 0.0
            self._fail_status = self._fail_remaining = self._fail_content = None
            self._fail_after = False
            self._calls.clear()
            self._hits = 0
        self._released.set()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "delay_seconds": self._delay,
                "fail_with_status": self._fail_status,
                "fail_remaining": self._fail_remaining,
                "fail_after_processing": self._fail_after,
                "fail_content": self._fail_content,
                "hits": self._hits,
                "holding": self._holding,  # record imports waiting for the hold to end
                "calls": [asdict(c) for c in self._calls],
            }
