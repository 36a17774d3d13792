"""Maintenance queue: housekeeping that beat schedules."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog

from workers.app import task

log = structlog.stdlib.get_logger(__name__)


@task()
def heartbeat() -> str:
    """Prove the worker is alive and beat is scheduling; returns the UTC time."""
    now = datetime.now(UTC).isoformat()
    log.info("worker_heartbeat", at=now)
    return now
