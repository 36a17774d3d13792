"""Start what is missing (PostgreSQL, Redis), hand their URLs on, stop them afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from devservers.servers import Ports, Postgres, Redis


@dataclass(frozen=True)
class Urls:
    database_url: str | None  # None: given, not ours
    redis_url: str | None
    admin_database_url: str | None = None


@contextmanager
def embedded(
    folder: Path, *, postgres: bool, redis: bool, throwaway: bool = False
) -> Iterator[Urls]:
    """The servers asked for, data under `folder`, stopped (in reverse order) on the way out.

    throwaway: the tests' servers, without fsync or an append-only file."""
    ports = Ports.load(folder / "ports.json")
    with ExitStack() as stack:
        pg = rd = None
        if postgres:
            pg = Postgres(folder / "postgres", ports.pick("postgres"), throwaway=throwaway)
            stack.callback(pg.stop)
            pg.start()
        if redis:
            rd = Redis(folder / "redis", ports.pick("redis"), throwaway=throwaway)
            stack.callback(rd.stop)
            rd.start()
        yield Urls(
            database_url=pg.url if pg else None,
            redis_url=rd.url if rd else None,
            admin_database_url=pg.admin_url if pg else None,
        )
