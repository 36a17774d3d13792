"""python -m tests.e2e.celery_worker <celery arguments>: Celery's own command line, with the
workers' task time limits shortened for a test.

The hard time limit (workers.app.TASK_TIME_LIMIT_S, 360 s) is a constant, and it bounds how
soon a task whose worker was killed runs again: the task holds its outbox row for the time
limit plus OUTBOX_LEASE_SECONDS (workers.events), and Redis gives its message back only after
CELERY_VISIBILITY_TIMEOUT, which must outlast the time limit. E2E_TASK_TIME_LIMIT_S lowers
the limit in this process before Celery reads its configuration, so a test sees in seconds
what production does in minutes. Nothing else changes: the same app, tasks and settings.
"""

from __future__ import annotations

import os
import sys


def shorten_time_limits(hard_limit_s: int) -> None:
    import workers.app as celery_app
    import workers.events as events

    celery_app.TASK_TIME_LIMIT_S = hard_limit_s
    celery_app.TASK_SOFT_TIME_LIMIT_S = max(1, hard_limit_s - 2)
    events.TASK_TIME_LIMIT_S = hard_limit_s  # type: ignore[attr-defined]


def main() -> None:
    limit = os.environ.get("E2E_TASK_TIME_LIMIT_S")
    if limit:
        shorten_time_limits(int(limit))
    from celery.__main__ import main as celery_main

    sys.argv = ["celery", *sys.argv[1:]]
    celery_main()


if __name__ == "__main__":
    main()
