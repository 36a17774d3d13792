"""Async services from sync Celery tasks: one event loop and one engine per worker process.

Made lazily on first use in the process that runs tasks (a prefork child, after the fork), so
no connection is ever shared across a fork; `worker_process_init` drops anything inherited
from the parent and `worker_process_shutdown` disposes of the engine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from server.core.config import Settings, get_settings
from server.core.db import create_engine, create_sessionmaker

T = TypeVar("T")
log = structlog.stdlib.get_logger(__name__)

# A prefork child runs one task at a time: two connections cover a task and its bookkeeping.
WORKER_POOL_SIZE = 2
# How long a process on its way out (SystemExit, KeyboardInterrupt) waits for the coroutine it
# interrupted to unwind. A pool child's SIGTERM (Celery cancelling a task when the broker
# connection drops) is billiard's sys.exit, raised wherever the loop is: inside a driver's
# callback it can leave a future that nothing will complete, and the coroutine's clean-up
# waits on it for ever. Exiting closes its connections anyway: the database rolls back.
EXIT_GRACE_S = 5.0
# Then the abandon hooks (on_abandon) get this long, on a connection of their own.
ABANDON_S = 3.0

# What to put right if this process leaves in the middle of the current task: hand its outbox
# row back to the relay now rather than when its lease lapses, let go of what it claimed. Each
# runs in a transaction of its own; what it writes must be right whether or not the task's own
# work got through (the task may have finished anything up to its commit).
Abandon = Callable[[AsyncSession], Awaitable[object]]
_abandon: list[Abandon] = []


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


_message_started = 0.0


def start_message() -> None:
    """A task's message begins (workers.protocol.run): its events share its time."""
    global _message_started
    _message_started = time.monotonic()


def message_age() -> float:
    """Seconds since the current message began: what its time limits have used."""
    return time.monotonic() - _message_started


def on_abandon(hook: Abandon) -> None:
    """Run `hook` if the process leaves before the current task is done (forget_abandon)."""
    _abandon.append(hook)


def forget_abandon() -> None:
    """The task is over, however it ended: its hooks no longer apply."""
    _abandon.clear()


async def _put_right(settings: Settings, hooks: list[Abandon]) -> None:
    # Not the process's pool: its connections may be mid-query in the interrupted coroutine.
    engine = create_engine(settings, pooled=False)
    try:
        for hook in hooks:
            try:
                async with AsyncSession(engine, expire_on_commit=False) as db, db.begin():
                    # A row the interrupted transaction still locks is not worth the wait.
                    await db.execute(text("SET LOCAL lock_timeout = '1s'"))
                    await hook(db)
            except Exception as exc:  # the next hook may still get through
                log.warning("abandon_hook_failed", error=type(exc).__name__)
    finally:
        await engine.dispose()


def _abandoned(loop: asyncio.AbstractEventLoop) -> None:
    hooks, _abandon[:] = list(_abandon), []
    if not hooks or _runtime is None:
        return
    with suppress(BaseException):
        loop.run_until_complete(
            asyncio.wait_for(_put_right(_runtime.settings, hooks), timeout=ABANDON_S)
        )


def run(coro_factory: Callable[[], Awaitable[T]]) -> T:
    """Run an async call to completion on this process's loop.

    If something interrupts the loop from outside the coroutine (Celery's soft time limit is a
    signal), the coroutine is cancelled before the error goes on, so it cannot resume inside
    the next task's run. When the interruption ends the process, it waits EXIT_GRACE_S at most,
    then runs the task's abandon hooks (ABANDON_S at most).
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
        if leaving:
            _abandoned(loop)
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
