"""Which Celery task handles each outbox topic, and on which queue: the one mapping.

The relay (workers.relay) publishes by task name, without importing the task modules; the worker
registers the tasks under the same names (tests/test_worker.py checks the two agree).
"""

from __future__ import annotations

from dataclasses import dataclass

from server.outbox.service import (
    ARCHIVE_SUBMISSION,
    EXPORT_BUILD,
    EXPORT_REDCAP_PUSH,
    REDCAP_IMPORT_PARTICIPANTS,
    REDCAP_SYNC_SUBMISSION,
    REMINDERS_SEND,
    SCORING_SESSION,
    SCORING_SUBMISSION,
)

REPORTS_BUILD = "reports.build"


@dataclass(frozen=True)
class Route:
    task_name: str
    queue: str


ROUTES: dict[str, Route] = {
    ARCHIVE_SUBMISSION: Route("workers.tasks.archive.archive_submission", "maintenance"),
    REDCAP_SYNC_SUBMISSION: Route("workers.tasks.redcap.sync_submission", "redcap"),
    # What reports read, on their queue: a rescoring burst never holds the archive back
    # (a full queue holds all its topics' new rows, relay_cycle.held_topics).
    SCORING_SUBMISSION: Route("workers.tasks.scoring.score_submission", "reports"),
    SCORING_SESSION: Route("workers.tasks.scoring.check_session", "reports"),
    REDCAP_IMPORT_PARTICIPANTS: Route("workers.tasks.redcap.import_participants", "redcap"),
    EXPORT_BUILD: Route("workers.tasks.exports.build_export", "exports"),
    # REDCap calls, but the one sender per connection (its advisory lock) is shared with the
    # sync's tasks: on the redcap queue, beside them, not behind a long export build.
    EXPORT_REDCAP_PUSH: Route("workers.tasks.exports.push_to_redcap", "redcap"),
    REPORTS_BUILD: Route("workers.tasks.reports.build_report", "reports"),
    REMINDERS_SEND: Route("workers.tasks.reminders.send_message", "notifications"),
}


class UnknownTopic(LookupError):
    """An outbox row no task handles (written by newer code, or a typo)."""


def route(topic: str) -> Route:
    try:
        return ROUTES[topic]
    except KeyError:
        raise UnknownTopic(topic) from None
