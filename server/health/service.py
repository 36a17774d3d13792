"""Readiness: can this process reach the database and the broker right now?"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from server.core.config import Settings
from server.core.models import utcnow
from server.outbox import backlog

CHECK_TIMEOUT_S = 2.0


@dataclass
class Readiness:
    components: dict[str, str] = field(default_factory=dict)
    # Work waiting for the workers: reported, never a reason to fail readiness.
    outbox_backlog: dict[str, object] | None = None

    @property
    def failing(self) -> list[str]:
        return [name for name, state in self.components.items() if state != "ok"]


async def _database(engine: AsyncEngine) -> str:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return "ok"


async def _broker(settings: Settings, redis: Redis | None) -> str:
    if redis is None:
        return "unavailable: no Redis client"
    await redis.ping()
    return "ok"


async def _timed(name: str, check: Coroutine[Any, Any, str]) -> tuple[str, str]:
    try:
        return name, await asyncio.wait_for(check, CHECK_TIMEOUT_S)
    except TimeoutError:
        return name, "unavailable: timed out"
    except Exception as exc:
        return name, f"unavailable: {type(exc).__name__}"


async def _outbox_backlog(engine: AsyncEngine) -> dict[str, object] | None:
    """Pending outbox rows and the oldest one's age; None when it cannot be read in time."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S), AsyncSession(engine) as db:
            state = await backlog.backlog(db, now=utcnow(), by_topic=False)
    except Exception:
        return None  # the database check says why
    return state.summary()


async def check(settings: Settings, engine: AsyncEngine, redis: Redis | None) -> Readiness:
    database, broker, backlog = await asyncio.gather(
        _timed("database", _database(engine)),
        _timed("broker", _broker(settings, redis)),
        _outbox_backlog(engine),
    )
    return Readiness(components=dict([database, broker]), outbox_backlog=backlog)
