"""Step 2 of a build (server.exports.build): one COPY of a module version's trials streamed
as CSV bytes straight into files, and the progress written to the export every few seconds."""

# A worker process runs one export on its own loop: blocking file calls hold up nothing else.
# ruff: noqa: ASYNC230

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.models import utcnow
from server.exports import writers
from server.exports.models import Export
from server.exports.plan import Plan

PROGRESS_EVERY_S = 2.0


class Progress:
    """Rows streamed so far, written to the export row every PROGRESS_EVERY_S."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], plan: Plan) -> None:
        self.sessionmaker = sessionmaker
        self.plan = plan
        self.done = 0
        self.written_at = time.monotonic()

    async def add(self, rows: int) -> None:
        self.done += rows
        if time.monotonic() - self.written_at >= PROGRESS_EVERY_S:
            await self.flush()

    async def flush(self) -> None:
        self.written_at = time.monotonic()
        async with self.sessionmaker() as db, db.begin():
            await db.execute(
                update(Export)
                .where(Export.id == self.plan.export_id)
                .values(rows_done=min(self.done, self.plan.rows_total), progress_at=utcnow())
            )


async def copy_trials(
    sessionmaker: async_sessionmaker[AsyncSession],
    sql: str,
    *,
    raw: Path | None,
    crlf: Path | None,
    progress: Progress,
    pause_s: float,
) -> None:
    """One COPY into the raw file and/or the CRLF CSV; bytes never become Python rows."""
    raw_out = open(raw, "wb") if raw is not None else None  # noqa: SIM115
    crlf_out = open(crlf, "wb") if crlf is not None else None  # noqa: SIM115
    sink = writers.CrlfSink(crlf_out) if crlf_out is not None else None
    first = True

    async def output(chunk: bytes) -> None:
        nonlocal first
        if raw_out is not None:
            raw_out.write(chunk)
        if sink is not None:
            sink.write(chunk)
        rows = chunk.count(b"\n") - (1 if first else 0)  # the header line is not a row
        first = False
        await progress.add(rows)
        if pause_s:
            await asyncio.sleep(pause_s)  # tests only: a slow export to kill mid-way

    try:
        async with sessionmaker() as db:
            connection = await db.connection()
            raw_connection = await connection.get_raw_connection()
            driver: Any = raw_connection.driver_connection
            await driver.copy_from_query(
                sql, output=output, format="csv", header=True, encoding="UTF8"
            )
            await db.rollback()
    finally:
        for handle in (raw_out, crlf_out):
            if handle is not None:
                handle.close()
