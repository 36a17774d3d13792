"""The one Celery app, `metricis`: queues, routing and reliability settings.

Settings are read when Celery first needs its configuration (the `on_configure` signal),
not when this module is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

from celery import Celery, signals
from kombu.entity import Exchange, Queue

from server.core.config import Settings, get_settings
from server.core.logging import configure_logging
from server.outbox.topics import ROUTES
from workers import runtime
from workers.beat import BEAT_SCHEDULE

QUEUES = ("redcap", "reports", "exports", "notifications", "maintenance")
DEFAULT_QUEUE = "maintenance"
TASK_MODULES = [
    "workers.tasks.maintenance",
    "workers.tasks.archive",
    "workers.tasks.redcap",
    "workers.tasks.scoring",
    "workers.tasks.exports",
    "workers.tasks.reports",
    "workers.tasks.reminders",
]


def _queue(name: str) -> Queue:
    # kombu's constructors carry no annotations.
    return Queue(name, Exchange(name), routing_key=name)  # type: ignore[no-untyped-call]


def task_routes() -> dict[str, dict[str, str]]:
    """`workers.tasks.<queue>.*` go to `<queue>`; outbox tasks go where their topic says."""
    routes = {f"workers.tasks.{name}.*": {"queue": name} for name in QUEUES}
    # Exact names: Celery looks these up before it tries the patterns.
    return {r.task_name: {"queue": r.queue} for r in ROUTES.values()} | routes


def _soft(hard: int) -> int:
    # The soft limit comes a tenth earlier, for the task to record its failure itself.
    return max(1, hard - max(1, hard // 10))


def build_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for this deployment: Redis as broker and result backend."""
    # The hard time limit (OUTBOX_LEASE_SECONDS) ends a run that hangs: its process is killed,
    # its run lock freed (server.outbox.liveness), and the relay publishes the row again. The
    # soft limit comes first, for the task to record the failure itself.
    hard = settings.OUTBOX_LEASE_SECONDS
    redis_options = {"visibility_timeout": settings.CELERY_VISIBILITY_TIMEOUT}
    # One beat schedules, however many run (redbeat): the schedule lives in Redis, next to the
    # queues, and a beat sends only while it holds the lock there. It renews the lock on every
    # loop, at least five times per timeout; a second beat blocks on the lock until the first
    # releases it (a clean stop) or stops renewing it (kill -9, a lost host). Its keys
    # (`redbeat:*`) share REDIS_URL's database with the queues, so they are per deployment.
    lock_timeout = settings.BEAT_LOCK_TIMEOUT_SECONDS
    return {
        "broker_url": settings.REDIS_URL,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
        # Acknowledged when a task starts: Redis never hands a message out twice; work whose
        # message or worker was lost comes back through the relay (workers.relay), only.
        "task_acks_late": False,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": _soft(hard),
        "task_time_limit": hard,
        # An export streams a whole study: its own, longer limit.
        "task_annotations": {
            "workers.tasks.exports.build_export": {
                "time_limit": settings.EXPORT_TIME_LIMIT_SECONDS,
                "soft_time_limit": _soft(settings.EXPORT_TIME_LIMIT_SECONDS),
            }
        },
        "task_queues": [_queue(name) for name in QUEUES],
        "task_default_queue": DEFAULT_QUEUE,
        "task_default_exchange": DEFAULT_QUEUE,
        "task_default_routing_key": DEFAULT_QUEUE,
        "task_routes": task_routes(),
        "beat_scheduler": "redbeat.RedBeatScheduler",
        "beat_schedule": BEAT_SCHEDULE,  # written to Redis by each beat as it starts
        "beat_max_loop_interval": max(1, lock_timeout // 5),
        "redbeat_redis_url": settings.REDIS_URL,
        "redbeat_lock_timeout": lock_timeout,
        # The broker's transport options (its visibility timeout) are not for the lock's client.
        "redbeat_redis_options": {},
        "worker_hijack_root_logger": False,
        "broker_transport_options": redis_options,
        "result_backend": settings.REDIS_URL,
        "result_backend_transport_options": redis_options,
    }


app = Celery("metricis", include=TASK_MODULES)


def create_celery(settings: Settings) -> Celery:
    """A Celery app configured from these settings, for publishing only (the outbox relay)."""
    publisher = Celery("metricis", set_as_current=False)
    publisher.conf.update(build_config(settings))
    return publisher


def _configure(sender: Celery, **_: Any) -> None:
    sender.conf.update(build_config(get_settings()))


def _setup_logging(**_: Any) -> None:
    configure_logging(get_settings())


app.on_configure.connect(_configure, weak=False)
# A receiver on setup_logging stops Celery from configuring (and hijacking) the root logger.
signals.setup_logging.connect(_setup_logging, weak=False)
# One event loop and engine per process that runs tasks, made after the fork (workers.runtime).
signals.worker_process_init.connect(runtime.init_process, weak=False)
signals.worker_process_shutdown.connect(runtime.shutdown, weak=False)
# The solo pool runs tasks in the main process. (Not the threads pool: one loop per process.)
signals.worker_shutdown.connect(runtime.shutdown, weak=False)


P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class TypedTask(Protocol, Generic[P, R_co]):
    """What `@task()` returns: callable like the function, and enqueued with checked args."""

    name: str
    # The current request (id, retries) while the task runs.
    request: Any

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Any: ...

    def apply_async(
        self,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any: ...


def task(**options: Any) -> Callable[[Callable[P, R]], TypedTask[P, R]]:
    """`app.task` with types kept: the task name is its module path, which picks its queue."""

    def register(fn: Callable[P, R]) -> TypedTask[P, R]:
        registered: TypedTask[P, R] = app.task(**options)(fn)
        return registered

    return register
