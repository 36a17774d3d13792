"""The sync states a REDCap push (server.exports.redcap_push) writes: its submissions put back
to pending under the connection they route to now, with every sender of the study held off.
"""

# The SQL is fixed text (no request value in it) with bound parameters.

from __future__ import annotations

import uuid

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.redcap import sync
from server.redcap.models import RedcapConnection

NO_CONNECTION = "No REDCap connection for this study or this participant's site."

_SENDER_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
# The connection each of the push's submissions routes to now (as
# server.redcap.service.connection_for): its participant's site's, else the study-wide one.
_ROUTED = """
    SELECT ps.submission_id, s.study_id, COALESCE(
        (SELECT c.id FROM redcap_connections c
         WHERE c.study_id = s.study_id AND c.site_id = p.site_id),
        (SELECT c.id FROM redcap_connections c
         WHERE c.study_id = s.study_id AND c.site_id IS NULL)) AS connection_id
    FROM redcap_push_submissions ps
    JOIN submissions s ON s.id = ps.submission_id
    JOIN participants p ON p.id = s.participant_id
    WHERE ps.push_id = :push_id
"""
# Through the same connection: record id, event, instrument and instance kept (the batch sends
# the same instance again: an update). Through another (the route changed since): another
# project, where they mean nothing; numbered afresh there.
_SAME = "redcap_sync_states.connection_id IS NOT DISTINCT FROM EXCLUDED.connection_id"
_RESET = text(f"""
    INSERT INTO redcap_sync_states
        (submission_id, study_id, connection_id, status, attempts, error, created_at)
    SELECT x.submission_id, x.study_id, x.connection_id,
           CASE WHEN x.connection_id IS NULL THEN 'skipped' ELSE 'pending' END, 0,
           CASE WHEN x.connection_id IS NULL THEN CAST(:no_connection AS text) END, :now
    FROM ({_ROUTED}) x
    ON CONFLICT (submission_id) DO UPDATE SET
        status = EXCLUDED.status, connection_id = EXCLUDED.connection_id,
        error = EXCLUDED.error, error_field = NULL, last_attempt_at = NULL,
        record_id = CASE WHEN {_SAME} THEN redcap_sync_states.record_id END,
        event = CASE WHEN {_SAME} THEN redcap_sync_states.event END,
        instrument = CASE WHEN {_SAME} THEN redcap_sync_states.instrument END,
        instance = CASE WHEN {_SAME} THEN redcap_sync_states.instance END
""")  # noqa: S608
# Pending states of the push whose route changed while it ran (a site's own connection added,
# one deleted): no sender of their old connection picks them, the new one's does now.
_REROUTE = text(f"""
    UPDATE redcap_sync_states st SET
        connection_id = x.connection_id,
        status = CASE WHEN x.connection_id IS NULL THEN 'skipped' ELSE 'pending' END,
        error = CASE WHEN x.connection_id IS NULL THEN CAST(:no_connection AS text) END,
        error_field = NULL, record_id = NULL, event = NULL, instrument = NULL, instance = NULL
    FROM ({_ROUTED}) x
    WHERE st.submission_id = x.submission_id AND st.status = 'pending'
      AND st.connection_id IS DISTINCT FROM x.connection_id
""")  # noqa: S608


async def hold_senders(session: AsyncSession, study_id: uuid.UUID) -> None:
    """Every sender of the study's connections held off for the caller's transaction, taken
    before any state is touched (a sender writing its outcome then waits for nothing held
    here): a batch in flight, under the mapping it was built with, is answered and written
    first, and the states put back to pending after it, never settled over them."""
    connections = await session.scalars(
        select(RedcapConnection.id)
        .where(RedcapConnection.study_id == study_id)
        .order_by(RedcapConnection.id)
    )
    for connection_id in connections.all():
        await session.execute(_SENDER_LOCK, {"key": sync.sender_key(connection_id)})


async def reset(session: AsyncSession, push_id: uuid.UUID, now: object) -> None:
    """The push's submissions' states pending under their route now (skipped with the reason
    if they have none), whatever they were; the caller holds the senders off."""
    await session.execute(_RESET, {"push_id": push_id, "no_connection": NO_CONNECTION, "now": now})


async def reroute(session: AsyncSession, push_id: uuid.UUID) -> int:
    """Pending states of the push moved to their route now; how many moved."""
    result = await session.execute(_REROUTE, {"push_id": push_id, "no_connection": NO_CONNECTION})
    return int(result.rowcount)  # type: ignore[attr-defined]
