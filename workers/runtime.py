"""Async services from sync Celery tasks: one event loop and one engine per worker process.

Made lazily on first use in the process that runs tasks (a prefork child, after the fork), so
no connection is ever shared across a fork; `worker_process_init` drops anything inherited
from the parent and `worker_process_shutdown` disposes of the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from server.core.config import Settings, get_settings
from server.core.db import create_engine, create_sessionmaker

T = TypeVar("T")
log = structlog.stdlib.get_logger(__name__)

# A prefork child runs one task at a time: its run lock, the task's session, and (a REDCap
# sender) the sender's lock and the next batch's pick beside this one's outcome.
WORKER_POOL_SIZE = 3
# How long a process on its way out (SystemExit, KeyboardInterrupt) waits for the coroutine it
# interrupted to unwind. A pool child's SIGTERM (Celery cancelling a task when the broker
# connection drops) is billiard's sys.exit, raised wherever the loop is: inside a driver's
# callback it can leave a future that nothing will complete, and the coroutine's clean-up
# waits on it for ever. Exiting closes its connections anyway: the database rolls back.
EXIT_GRACE_S = 5.0


@dataclass
class Runtime:
    settings: Settings
    loop: asyncio.AbstractEventLoop
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]


_runtime: Runtime | None = None


def current() -> Runtime:
    global _runtime
    if _runtime is None:
        settings = get_settings()
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        engine = create_engine(settings.model_copy(update={"DATABASE_POOL_SIZE": WORKER_POOL_SIZE}))
        _runtime = Runtime(settings, loop, engine, create_sessionmaker(engine))
    return _runtime


def sessionmaker() -> async_sessionmaker[AsyncSession]:
    return current().sessionmaker


def run(coro_factory: Callable[[], Awaitable[T]]) -> T:
    """Run an async call to completion on this process's loop.

    If something interrupts the loop from outside the coroutine (Celery's soft time limit is a
    signal), the coroutine is cancelled before the error goes on, so it cannot resume inside
    the next task's run. When the interruption ends the process, it waits EXIT_GRACE_S at most:
    its row comes back through the relay, and the database rolls back what it left open.
    """
    loop = current().loop

    async def main() -> T:
        return await coro_factory()

    task = loop.create_task(main())
    try:
        return loop.run_until_complete(task)
    except BaseException as exc:
        leaving = isinstance(exc, SystemExit | KeyboardInterrupt)
        if not task.done():
            task.cancel()
            with suppress(BaseException):
                loop.run_until_complete(
                    asyncio.wait({task}, timeout=EXIT_GRACE_S if leaving else None)
                )
        raise


def init_process(**_: Any) -> None:
    """worker_process_init: a forked child forgets the parent's runtime without touching it."""
    global _runtime
    _runtime = None


def shutdown(**_: Any) -> None:
    """worker_process_shutdown: close the pool's connections and the loop."""
    global _runtime
    runtime, _runtime = _runtime, None
    if runtime is None:
        return
    try:
        runtime.loop.run_until_complete(runtime.engine.dispose())
    finally:
        runtime.loop.close()
