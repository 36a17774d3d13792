"""Rate limits on the `limits` library's asyncio API, counted in Redis so they hold across
processes.

Every check awaits Redis, bounded by RATE_LIMIT_TIMEOUT_SECONDS: a Redis that hangs delays only
the rate-limited requests (by at most that bound), never the event loop, so /api/health and
every other request of the process keep answering.

No slowapi: its Limiter (0.1.10) builds the *synchronous* storage and strategies of `limits`
only, so each check was a blocking Redis round trip on the event loop. We only ever used it to
hold a storage and a strategy (its decorator binds to a module-level limiter, where ours is
built from settings per app, and cannot key on the account named in a login form), which the
dependencies below now hold themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import math
import time
from typing import Any

import structlog
from fastapi import Request
from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import Redis

from server.core.config import Settings
from server.core.errors import RateLimited

log = structlog.get_logger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _storage(redis: Redis) -> Storage:
    """The counters, on the app's own connection pool: no second set of connections, and the
    app's lifespan closes it. The URI only names the scheme; the pool says where Redis is.

    Keys keep the library's default prefix and Lua scripts, as the synchronous limiter had
    them, so processes of both versions share their counters during a rolling deploy.
    """
    # limits types its options as scalars; redis-py takes the pool as a keyword argument.
    options: dict[str, Any] = {"connection_pool": redis.connection_pool}
    return RedisStorage("async+redis://", implementation="redispy", **options)


class RateLimits:
    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.enabled = settings.RATE_LIMIT_ENABLED
        self.default = parse(settings.RATE_LIMIT_DEFAULT)
        self.login = parse(settings.RATE_LIMIT_LOGIN)
        self.participant_auth = parse(settings.RATE_LIMIT_PARTICIPANT_AUTH)
        self.timeout = settings.RATE_LIMIT_TIMEOUT_SECONDS
        self.trusted_proxies: list[IPNetwork] = [
            ipaddress.ip_network(p, strict=False) for p in settings.TRUSTED_PROXIES
        ]
        # Moving window: no burst of twice the limit at a window's edge.
        self.limiter = MovingWindowRateLimiter(_storage(redis))

    def _trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.trusted_proxies)

    def client_ip(self, request: Request) -> str:
        """The peer address; X-Forwarded-For only when the peer is a trusted proxy.

        Walk the chain from the right and stop at the first hop we do not trust, so a
        client cannot choose its own address by sending the header itself.
        """
        peer = request.client.host if request.client else "unknown"
        if not self._trusted(peer):
            return peer
        forwarded = request.headers.get("x-forwarded-for", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop
        return hops[0] if hops else peer

    async def hit(self, item: RateLimitItem, scope: str, key: str) -> None:
        """Count this request, and refuse it (429) if it is over the limit."""
        await self._guard(item, scope, key, count=True)

    async def check(self, item: RateLimitItem, scope: str, key: str) -> None:
        """Refuse (429) if the limit is already used up, without counting this request."""
        await self._guard(item, scope, key, count=False)

    async def record(self, item: RateLimitItem, scope: str, key: str) -> None:
        """Count an event (a failed login, say) after the fact; never refuses."""
        if not self.enabled:
            return
        try:
            async with asyncio.timeout(self.timeout):
                await self.limiter.hit(item, scope, key)
        except Exception as exc:
            _unavailable(exc, scope)

    async def _guard(self, item: RateLimitItem, scope: str, key: str, *, count: bool) -> None:
        if not self.enabled:
            return
        try:
            # One bound for the whole exchange (connecting, redis-py's own retries, the
            # answers): a Redis that does not answer costs a request this much, no more.
            async with asyncio.timeout(self.timeout):
                if count:
                    allowed = await self.limiter.hit(item, scope, key)
                else:
                    allowed = await self.limiter.test(item, scope, key)
                if allowed:
                    return
                reset_at, _remaining = await self.limiter.get_window_stats(item, scope, key)
        except Exception as exc:
            # Fail open, as when Redis is down: limits protect the service, and losing (or
            # waiting on) Redis must not take logins and study routes down with it. The
            # warning is what tells operators the limits are off meanwhile.
            _unavailable(exc, scope)
            return
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise RateLimited(
            details={"limit": str(item), "scope": scope},
            headers={"Retry-After": str(retry_after)},
        )


def _unavailable(exc: Exception, scope: str) -> None:
    # TimeoutError: Redis did not answer within the bound (hung, overloaded, partitioned).
    log.warning("rate_limit_storage_unavailable", error=type(exc).__name__, scope=scope)


def account_key(identifier: str) -> str:
    # Keys in Redis carry no email address.
    return hashlib.sha256(identifier.strip().lower().encode()).hexdigest()[:32]


def limits_of(request: Request) -> RateLimits:
    limits: RateLimits = request.app.state.rate_limits
    return limits


async def default_rate_limit(request: Request) -> None:
    limits = limits_of(request)
    await limits.hit(limits.default, "default", limits.client_ip(request))


async def login_ip_rate_limit(request: Request) -> None:
    limits = limits_of(request)
    await limits.hit(limits.login, "login-ip", limits.client_ip(request))


async def participant_auth_rate_limit(request: Request) -> None:
    limits = limits_of(request)
    await limits.hit(limits.participant_auth, "participant-auth-ip", limits.client_ip(request))
