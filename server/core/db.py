"""Engine, session factory and the request's unit of work.

Only the request's session dependency commits; services flush.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
import orjson
from fastapi import Depends, Request
from sqlalchemy import ColumnElement, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.pool import NullPool, Pool, QueuePool
from sqlalchemy.util import greenlet_spawn

from server.core.config import Settings


def _json_dumps(value: Any) -> str:
    # orjson: a submission's trials are tens of kilobytes of JSON, json.dumps is 5-10x slower.
    return orjson.dumps(value).decode()


def create_engine(settings: Settings, *, pooled: bool = True) -> AsyncEngine:
    """pooled=False: a new connection for every session, closed after it (NullPool)."""
    kwargs: dict[str, Any] = {
        "pool_pre_ping": False,
        "json_serializer": _json_dumps,
        "json_deserializer": orjson.loads,
    }
    if not pooled:
        kwargs["poolclass"] = NullPool
    else:
        kwargs.update(
            pool_size=settings.DATABASE_POOL_SIZE, max_overflow=settings.DATABASE_POOL_SIZE
        )
    return create_async_engine(settings.DATABASE_URL, **kwargs)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def get_db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: commit when the route returns, roll back when it raises.

    Used with scope="function" so the commit happens before the response is sent:
    a client is never told 2xx for a write that did not commit.
    """
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        try:
            yield session
        except Exception:
            await session.rollback()
            raise
        else:
            await session.commit()


DBSession = Annotated[AsyncSession, Depends(get_db_session, scope="function")]


async def end_reads(db: AsyncSession) -> None:
    """End the session's transaction before a call to the outside world (REDCap, SMTP, S3).

    Call out, then write: a transaction held open across a network call holds a pooled
    connection, and any row locks, for as long as the other side takes (and shows as `idle in
    transaction`). So a route reads what it needs, ends its transaction here, makes the call,
    and its writes after it go into a new, short transaction (the session begins one on its
    next statement; the request's unit of work commits that one as usual).

    A commit, not a rollback: the objects already loaded stay usable (expire_on_commit=False;
    a rollback would expire them, and reading them again would need the database). Call it
    before the route writes anything: what it has flushed so far commits here. Unflushed
    changes are refused, so nothing goes half-way by accident. In the tests, the session is
    a savepoint of the test's transaction and this releases it: the code path is the same,
    the outer transaction stays (tests/test_redcap_no_transaction.py runs on a real database).
    """
    if db.new or db.dirty or db.deleted:
        raise RuntimeError("end_reads: the session has changes not flushed")
    if db.in_transaction():
        await db.commit()


async def get_autocommit_session(request: Request) -> AsyncIterator[AsyncSession]:
    """For routes whose every write is one self-contained statement (the ingest path).

    Each statement commits on its own, with no BEGIN/COMMIT round trips; the statement has
    returned, so it is durable, before the route answers.
    """
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.autocommit_sessionmaker
    async with sessionmaker() as session:
        yield session


AutocommitSession = Annotated[AsyncSession, Depends(get_autocommit_session, scope="function")]


def create_autocommit_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # Same pool; the driver simply does not open a transaction block.
    return create_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))


async def driver_connection(db: AsyncSession) -> Any:
    """The asyncpg connection under the session, in whatever transaction the session is in.

    The ingest path's two hot statements go to it directly: through SQLAlchemy the same
    statements cost several times the CPU (measured with tests/bench/ingest.py).
    """
    connection = await db.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection


# Per pool: how many statement_connection() statements may hold one of its connections.
_statement_slots: weakref.WeakKeyDictionary[Pool, asyncio.Semaphore] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def statement_connection(db: AsyncSession) -> AsyncIterator[Any]:
    """The asyncpg connection to run one statement on.

    An autocommit session (get_autocommit_session) commits each statement on its own, so the
    statement can run on any connection: one from the pool, given back as soon as it has run,
    none held while the request works between statements. Held to the end of the request, a
    pool's worth of requests in flight opened connections beyond it, which the pool closed
    again on return: each cost PostgreSQL 30-60 ms of CPU (a backend, asyncpg's type
    introspection), 1 ms per submission at 32 clients. So at most the pool's size run at once
    and the others wait (a statement takes about a millisecond). The pool's raw connection
    costs 25 us against a session's checkout and close, 120 us.

    A session already holding a connection (it ran an ORM query; a unit of work; a test's
    transaction) lends it: a request never waits for a second connection while it holds one.
    """
    bind = db.bind
    if (
        db.in_transaction()
        or not isinstance(bind, AsyncEngine)
        or bind.get_execution_options().get("isolation_level") != "AUTOCOMMIT"
    ):
        yield await driver_connection(db)
        return
    pool = bind.sync_engine.pool
    slots = _statement_slots.get(pool)
    if slots is None:
        # A pool without a size (NullPool: a connection per checkout) has nothing to protect.
        size = pool.size() if isinstance(pool, QueuePool) else 1_000_000
        slots = _statement_slots.setdefault(pool, asyncio.Semaphore(size))
    async with slots:
        pooled = await bind.raw_connection()
        try:
            yield pooled.driver_connection
        except asyncpg.PostgresError:
            # PostgreSQL refused the statement and said so: the connection is as good as before.
            await greenlet_spawn(pooled.close)
            raise
        except BaseException:
            # Cancelled mid-statement, or the connection failed: its state is unknown, so it
            # is closed rather than handed to the next request.
            await greenlet_spawn(pooled.invalidate)
            raise
        await greenlet_spawn(pooled.close)


def one_of(column: ColumnElement[Any] | InstrumentedAttribute[Any], values: Sequence[Any]) -> Any:
    """`column IN values`, as one array parameter (`= ANY($1)`).

    An IN list of n values is a statement of n parameters: a new text for every batch size,
    which asyncpg prepares and PostgreSQL plans anew each time (a 500-id UPDATE of sync states
    spent more on that than on the rows). An array is one statement, prepared once.
    """
    return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
