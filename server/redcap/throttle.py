"""Calls per REDCap server, kept under the connection's budget across every process.

REDCap has no 429: past its page-hit threshold it bans the caller's IP. So every call waits
for a slot in a moving window kept in Redis (the `limits` library, shared by web and worker
processes), keyed by the server's host: two projects on one REDCap server share its budget.
Without Redis (the embedded default) the window is kept in memory, per process.
"""

from __future__ import annotations

import asyncio
import math
import time
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import structlog
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from server.core.config import Settings
from server.redcap.errors import RedcapBusy

log = structlog.get_logger(__name__)

_SCOPE = "metricis-redcap"
# Never sleep longer than this at once: a long wait re-checks, in case slots free up early.
_MAX_SLEEP = 5.0


def server_key(api_url: str) -> str:
    """The REDCap server an API URL belongs to: its host and port."""
    return urlsplit(api_url).netloc.lower()


def window_item(max_calls_per_minute: int, window_seconds: int) -> RateLimitItem:
    """`max_calls_per_minute` spread over windows of about `window_seconds`.

    The window is widened until it holds at least one call, and rounding only ever lowers
    the rate: 120/min over 10 s is 20 per 10 s; 4/min is 1 per 15 s.
    """
    per_minute = max(1, max_calls_per_minute)
    window = max(window_seconds, math.ceil(60 / per_minute))
    amount = max(1, per_minute * window // 60)
    return RateLimitItemPerSecond(amount, window)


@lru_cache(maxsize=8)
def _limiter(storage_uri: str) -> MovingWindowRateLimiter:
    options: dict[str, Any] = {}
    if storage_uri.startswith("redis"):
        options = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
    return MovingWindowRateLimiter(storage_from_string(storage_uri, **options))


class Throttle:
    def __init__(self, settings: Settings) -> None:
        self.limiter = _limiter(settings.REDIS_URL or "memory://")
        self.window_seconds = settings.REDCAP_THROTTLE_WINDOW_SECONDS

    def _try(self, item: RateLimitItem, key: str) -> float | None:
        """None when a slot was taken; else seconds until one may be free."""
        try:
            if self.limiter.hit(item, _SCOPE, key):
                return None
            reset_at, _remaining = self.limiter.get_window_stats(item, _SCOPE, key)
        except Exception as exc:
            # Redis down means the broker is down too; a web request should not hang on it.
            log.warning("redcap_throttle_storage_unavailable", error=type(exc).__name__)
            return None
        return max(0.01, reset_at - time.time())

    async def acquire(
        self, api_url: str, max_calls_per_minute: int, *, max_wait: float | None = None
    ) -> float:
        """Wait for a slot; return the seconds waited. With max_wait, RedcapBusy past it."""
        item = window_item(max_calls_per_minute, self.window_seconds)
        key = server_key(api_url)
        waited = 0.0
        while True:
            delay = await asyncio.to_thread(self._try, item, key)
            if delay is None:
                if waited:
                    log.info("redcap_throttled", server=key, waited_seconds=round(waited, 2))
                return waited
            if max_wait is not None and waited + delay > max_wait:
                raise RedcapBusy(headers={"Retry-After": str(math.ceil(delay))})
            pause = min(delay, _MAX_SLEEP)
            await asyncio.sleep(pause)
            waited += pause
