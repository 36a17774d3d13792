"""The beat schedule. Only the beat holding the lock in Redis sends it (redbeat: workers.app)."""

from __future__ import annotations

from typing import Any

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "maintenance.heartbeat": {
        "task": "workers.tasks.maintenance.heartbeat",
        "schedule": 60.0,
    },
    # Every minute, at most a minute late: each tick handles what fell due since the last one.
    "reminders.dispatch": {
        "task": "workers.tasks.reminders.dispatch",
        "schedule": 60.0,
    },
    "maintenance.sweep_schedules": {
        "task": "workers.tasks.maintenance.sweep_schedules",
        "schedule": 60.0,
    },
}
