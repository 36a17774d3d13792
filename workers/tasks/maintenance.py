"""Maintenance queue: housekeeping that beat schedules."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime

import structlog

from server.core import clock
from server.schedules import sweep as schedules_sweep
from workers import runtime
from workers.app import task

log = structlog.stdlib.get_logger(__name__)


@task()
def heartbeat() -> str:
    """Prove the worker is alive and beat is scheduling; returns the UTC time."""
    now = datetime.now(UTC).isoformat()
    log.info("worker_heartbeat", at=now)
    return now


async def _sweep_schedules() -> dict[str, int] | None:
    async with runtime.sessionmaker()() as db:
        result = await schedules_sweep.run_once(db, now=clock.now())
        await db.commit()
    return None if result is None else asdict(result)


@task()
def sweep_schedules() -> dict[str, int] | None:
    """Visits: windows closed to missed, opened to open; schedules for new participants and
    new protocol versions; future visits of participants whose zone changed. Idempotent;
    None when another sweep holds the lock."""
    outcome = runtime.run(_sweep_schedules)
    if outcome is not None and any(outcome.values()):
        log.info("schedules_swept", **outcome)
    return outcome
