"""One batch into REDCap and its outcome: the import call (chunked, with REDCap's refusals
taken out row by row), the shape check before it, and the outcome written on the states,
with the other submissions' outbox rows finished (server.redcap.sync runs these)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import orjson
import structlog
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.core.db import one_of
from server.core.models import utcnow
from server.outbox import service as outbox
from server.redcap import shape
from server.redcap.batch import Item, own_transaction
from server.redcap.client import RedcapClient
from server.redcap.errors import RedcapRejected, TransientRedcapError
from server.redcap.models import RedcapSyncState, SyncStatus
from server.redcap.plan import Plan
from server.redcap.rejections import blame_rows

log = structlog.get_logger(__name__)

# Rounds of "import, drop what REDCap refused, import the rest" before the rest waits.
MAX_ROUNDS = 5
DEFERRED = "Deferred: REDCap kept refusing rows of this batch; sent again with the next sync."


def _chunks(items: list[Item], settings: Settings) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    size = 2
    for item in items:
        row_size = len(orjson.dumps(item.row)) + 1
        if chunk and (
            len(chunk) >= settings.REDCAP_IMPORT_CHUNK_ROWS
            or size + row_size > settings.REDCAP_IMPORT_CHUNK_BYTES
        ):
            yield chunk
            chunk, size = [], 2
        chunk.append(item)
        size += row_size
    if chunk:
        yield chunk


@dataclass
class Results:
    synced: list[uuid.UUID] = field(default_factory=list)
    failed: dict[uuid.UUID, tuple[str, str | None]] = field(default_factory=dict)
    calls: int = 0
    batches: int = 0
    first_batch: int = 0  # the size of the first batch sent


async def write_results(
    session: AsyncSession,
    results: Results,
    *,
    still_pending: Sequence[uuid.UUID] = (),
    pending_error: str | None = None,
    own: uuid.UUID | None = None,
) -> None:
    """The batch's outcome on its states, and the sync events of those it settled completed,
    but `own`'s: the task that runs for it completes its own (workers.protocol)."""
    now = utcnow()
    states = update(RedcapSyncState).execution_options(synchronize_session=False)
    if results.synced:
        await session.execute(
            states.where(one_of(RedcapSyncState.submission_id, results.synced)).values(
                status=SyncStatus.synced, synced_at=now, error=None, error_field=None
            )
        )
    for submission_id, (message, error_field) in results.failed.items():
        await session.execute(
            states.where(RedcapSyncState.submission_id == submission_id).values(
                status=SyncStatus.failed,
                error=message,
                error_field=error_field[:100] if error_field else None,
            )
        )
    if still_pending:
        # Still pending (the error says why it waits).
        await session.execute(
            states.where(one_of(RedcapSyncState.submission_id, still_pending)).values(
                status=SyncStatus.pending, error=pending_error or DEFERRED, error_field=None
            )
        )
    # The sync rows of the others this batch settled: their own runs find nothing to do.
    topic = outbox.REDCAP_SYNC_SUBMISSION
    await outbox.settle(session, topic, [i for i in results.synced if i != own], now=now)
    for submission_id, (message, _) in results.failed.items():
        if submission_id != own:
            await outbox.settle(session, topic, [submission_id], now=now, error=message)
    await session.flush()


async def send(
    client: RedcapClient,
    settings: Settings,
    plan: Plan,
    items: list[Item],
    results: Results,
) -> list[Item]:
    """Import until everything is synced or failed; what is left after MAX_ROUNDS."""
    record_id_field = plan.document["record_id_field"]
    if await _misfit(client, plan, items, results):
        return []
    remaining = items
    for _round in range(MAX_ROUNDS):
        if not remaining:
            break
        again: list[Item] = []
        for chunk in _chunks(remaining, settings):
            try:
                await client.import_records([i.row for i in chunk])
            except RedcapRejected as exc:
                results.calls += 1
                blamed = blame_rows(exc.redcap_message, [i.row for i in chunk], record_id_field)
                if not blamed:
                    # Nothing in the message points at a row (a missing right, say): all of them.
                    for item in chunk:
                        results.failed[item.submission_id] = (exc.redcap_message, None)
                    continue
                for index, item in enumerate(chunk):
                    if index in blamed:
                        results.failed[item.submission_id] = (
                            blamed[index].message,
                            blamed[index].field,
                        )
                    else:
                        again.append(item)
                log.info(
                    "redcap_rows_refused",
                    connection_id=str(plan.connection_id),
                    refused=len(blamed),
                    again=len(chunk) - len(blamed),
                )
                continue
            results.calls += 1
            results.synced.extend(i.submission_id for i in chunk)
        remaining = again
    return remaining


async def _misfit(client: RedcapClient, plan: Plan, items: list[Item], results: Results) -> bool:
    """A project whose shape no longer fits the mapping (server.redcap.shape) gets none of the
    batch: each of its submissions fails with the mapping error. True if so."""
    try:
        problem = await shape.misfit(
            client, plan.connection_id, plan.mapping_version, plan.document
        )
    except RedcapRejected as exc:  # a revoked token, say: its import would be refused too
        problem = exc.redcap_message
    if problem is None:
        return False
    for item in items:
        results.failed[item.submission_id] = (problem, None)
    log.warning(
        "redcap_mapping_misfit",
        connection_id=str(plan.connection_id),
        batch=len(items),
        problem=problem,
    )
    return True


async def write_transient(
    db: AsyncSession, plan: Plan, items: list[Item], results: Results, exc: TransientRedcapError,
    own: uuid.UUID,
) -> None:  # fmt: skip
    """What a batch cut short by a transient failure got done; the rest stays pending with
    the error (and its instances)."""
    done = set(results.synced) | set(results.failed)
    waiting = [i.submission_id for i in items if i.submission_id not in done]
    async with own_transaction(db) as session:
        await write_results(
            session, results, still_pending=waiting, pending_error=exc.message, own=own
        )
    log.warning(
        "redcap_sync_transient",
        connection_id=str(plan.connection_id),
        batch=len(items),
        synced=len(results.synced),
        waiting=len(waiting),
        error=exc.message,
    )


def log_batch(plan: Plan, size: int, results: Results, deferred: list[Item]) -> None:
    log.info(
        "redcap_sync_batch",
        connection_id=str(plan.connection_id),
        batch=size,
        synced=len(results.synced),
        failed=len(results.failed),
        deferred=len(deferred),
        calls=results.calls,
    )
