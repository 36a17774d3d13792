"""Rate limits on slowapi's limiter, with Redis storage so limits hold across processes.

Limits are checked in a dependency rather than slowapi's decorator: the decorator binds to a
module-level limiter (we build ours from settings per app) and cannot key on the account
named in a login form.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from typing import cast

import structlog
from fastapi import Request
from limits import RateLimitItem, parse
from slowapi import Limiter

from server.core.config import Settings
from server.core.errors import RateLimited

log = structlog.get_logger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


_FAIL_FAST: dict[str, object] = {"socket_timeout": 0.25, "socket_connect_timeout": 0.25}


class RateLimits:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.RATE_LIMIT_ENABLED
        self.default = parse(settings.RATE_LIMIT_DEFAULT)
        self.login = parse(settings.RATE_LIMIT_LOGIN)
        self.participant_auth = parse(settings.RATE_LIMIT_PARTICIPANT_AUTH)
        self.trusted_proxies: list[IPNetwork] = [
            ipaddress.ip_network(p, strict=False) for p in settings.TRUSTED_PROXIES
        ]
        self.limiter = Limiter(
            key_func=self.client_ip,
            storage_uri=settings.rate_limit_storage_uri,
            # A dead Redis must not stall requests: fail fast, then fail open (see hit()).
            # slowapi types these as str, but they go straight to redis-py as keyword arguments.
            storage_options=cast("dict[str, str]", _FAIL_FAST if settings.REDIS_URL else {}),
            strategy="moving-window",  # no burst of 2x the limit at a window edge
            key_prefix="metricis-rl",
            enabled=self.enabled,
        )

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

    def hit(self, item: RateLimitItem, scope: str, key: str) -> None:
        """Count this request, and refuse it (429) if it is over the limit."""
        self._guard(item, scope, key, count=True)

    def check(self, item: RateLimitItem, scope: str, key: str) -> None:
        """Refuse (429) if the limit is already used up, without counting this request."""
        self._guard(item, scope, key, count=False)

    def record(self, item: RateLimitItem, scope: str, key: str) -> None:
        """Count an event (a failed login, say) after the fact; never refuses."""
        if not self.enabled:
            return
        try:
            self.limiter.limiter.hit(item, scope, key)
        except Exception as exc:
            log.warning("rate_limit_storage_unavailable", error=type(exc).__name__)

    def _guard(self, item: RateLimitItem, scope: str, key: str, *, count: bool) -> None:
        if not self.enabled:
            return
        strategy = self.limiter.limiter
        try:
            allowed = strategy.hit(item, scope, key) if count else strategy.test(item, scope, key)
            if allowed:
                return
            reset_at, _remaining = strategy.get_window_stats(item, scope, key)
        except Exception as exc:
            # Limits protect the service; losing Redis must not take submissions down with it.
            log.warning("rate_limit_storage_unavailable", error=type(exc).__name__)
            return
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise RateLimited(
            details={"limit": str(item), "scope": scope},
            headers={"Retry-After": str(retry_after)},
        )


def account_key(identifier: str) -> str:
    # Keys in Redis carry no email address.
    return hashlib.sha256(identifier.strip().lower().encode()).hexdigest()[:32]


def limits_of(request: Request) -> RateLimits:
    limits: RateLimits = request.app.state.rate_limits
    return limits


async def default_rate_limit(request: Request) -> None:
    limits = limits_of(request)
    limits.hit(limits.default, "default", limits.client_ip(request))


async def login_ip_rate_limit(request: Request) -> None:
    limits = limits_of(request)
    limits.hit(limits.login, "login-ip", limits.client_ip(request))


async def participant_auth_rate_limit(request: Request) -> None:
    limits = limits_of(request)
    limits.hit(limits.participant_auth, "participant-auth-ip", limits.client_ip(request))
