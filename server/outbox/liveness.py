"""Whether a `running` row's run is still alive: it holds the row's advisory lock.

A run (workers.protocol) takes a PostgreSQL session-level advisory lock keyed on its row's id,
on a database connection of its own, before it claims the row, and gives it back once its
outcome is committed. PostgreSQL frees the lock when that connection ends, so a worker killed
mid-run (kill -9, the OOM killer, its hard time limit) loses it at once; a host that vanishes
loses it once TCP keepalive gives up on it (about a minute, set on the holder below). A row
`running` whose lock is free is a run that ended without its outcome: the relay publishes it
again within seconds (workers.relay), instead of waiting for a lease.

The REDCap sender's lock (server.redcap.sync) is the same kind of lock, keyed on its
connection; the two keys never meet (different prefixes of one 64-bit hash).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

# The key: a 64-bit hash of "outbox-run:<row id>" (written out in each statement below).
# Keepalive on the holder's connection (its own session only): a dead peer is noticed in
# 30 + 3 x 10 s, not the system's default two hours, and its lock freed with it.
_TRY = text(
    "SELECT set_config('tcp_keepalives_idle', '30', false),"
    " set_config('tcp_keepalives_interval', '10', false),"
    " set_config('tcp_keepalives_count', '3', false),"
    " pg_try_advisory_lock(hashtextextended('outbox-run:' || CAST(:id AS text), 0))"
)
_UNLOCK = text("SELECT pg_advisory_unlock(hashtextextended('outbox-run:' || CAST(:id AS text), 0))")
# Running rows nobody holds: the held advisory locks of this database (a 64-bit key is
# classid:objid with objsubid 1), read from pg_locks, which takes no lock itself. Oldest run
# first; SKIP LOCKED as in outbox.service.due (a run claiming one right now is left to it).
_ORPHANED = text(
    """
    WITH held AS (
        SELECT (l.classid::bigint << 32) | l.objid::bigint AS key
        FROM pg_locks AS l
        WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    )
    SELECT e.id, e.topic
    FROM outbox_events AS e
    WHERE e.finished_at IS NULL AND e.status = 'running'
      AND hashtextextended('outbox-run:' || CAST(e.id AS text), 0) NOT IN (SELECT key FROM held)
    ORDER BY e.started_at
    LIMIT :limit
    FOR UPDATE OF e SKIP LOCKED
    """
)


@asynccontextmanager
async def run_lock(bind: AsyncEngine | AsyncConnection, event_id: uuid.UUID) -> AsyncIterator[bool]:
    """The row's run lock, tried (never waited for): True if this run holds it, False if another
    live run does. From an engine, on a connection of its own in autocommit (no transaction
    stays open); bound to a connection (the test harness), on that one."""
    key = {"id": str(event_id)}
    async with AsyncExitStack() as stack:
        if isinstance(bind, AsyncConnection):
            holder = bind
        else:
            connection = await stack.enter_async_context(bind.connect())
            holder = await connection.execution_options(isolation_level="AUTOCOMMIT")
        held = bool((await holder.execute(_TRY, key)).one()[-1])
        try:
            yield held
        finally:
            if held:
                try:
                    await holder.execute(_UNLOCK, key)
                except BaseException:
                    # Not given back (cancelled, or the database went away): the connection
                    # must not go back to the pool holding it, or the row would look alive.
                    await holder.invalidate()
                    raise


async def orphaned(db: AsyncSession, *, limit: int) -> list[tuple[uuid.UUID, str]]:
    """(id, topic) of up to `limit` running rows whose run holds no lock: their worker is
    gone. Locked FOR UPDATE until the caller commits."""
    rows = await db.execute(_ORPHANED, {"limit": limit})
    return [(row[0], row[1]) for row in rows]
