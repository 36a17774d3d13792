"""Schedules benchmark: materialise 100,000 participants' visits, then ask what is due now.

    make bench-schedules        (python -m tests.bench.schedules)

A fresh PostgreSQL database on TEST_DATABASE_URL's server, migrated. One study with a
5-visit protocol (baseline, weeks 1, 4, 12 and 26, at 09:00 local, windows of 2 days before
and 5 after); 100,000 participants written with COPY, enrolled over a year at random times,
in eight time zones. Then, timed: server.schedules.materialise.materialise_new, exactly what
the beat sweep runs, to its commit; the sweep's close-and-open step at a day in September;
and the "what is due now" query for all participants, as a reminder sender would run it
(median of --repeat runs, rows fetched to the client), with its EXPLAIN ANALYZE. The last
line is `schedules: materialise_per_s=M due_query_ms=Q`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, async_sessionmaker, create_async_engine

from server.cli import migrate
from server.core.config import Settings
from server.core.db import driver_connection
from server.schedules import materialise, sweep
from tests import factories, services
from tests import ingest_factories as ingest
from tests import schedule_factories as sched
from tests.conftest import create_database, drop_database

ZONES = (
    "Europe/Berlin", "Europe/London", "America/New_York", "America/Los_Angeles",
    "Asia/Tokyo", "Australia/Sydney", "Asia/Kolkata", "UTC",
)  # fmt: skip
VISITS = [
    {"key": key, "offset_days": days, "window_before_minutes": 2 * 1440,
     "window_after_minutes": 5 * 1440}
    for key, days in (("baseline", 0), ("week1", 7), ("week4", 28), ("week12", 84), ("week26", 182))
]  # fmt: skip
DUE_SQL = """
SELECT id, participant_id, visit_id, window_end FROM visit_occurrences
WHERE status IN ('upcoming', 'open') AND window_start <= $1 AND window_end > $1
"""
NOW = datetime(2026, 9, 1, 12, tzinfo=UTC)


def _settings(url: str) -> Settings:
    return Settings(
        ENVIRONMENT="test",
        DATABASE_URL=url,
        REDIS_URL=f"{services.TEST_REDIS_URL}/0",
        JWT_SECRET_KEY="bench-schedules-" + "s" * 40,
        LOG_LEVEL="WARNING",
    )  # type: ignore[call-arg]


async def _setup(settings: Settings, n: int) -> None:
    engine = create_async_engine(settings.DATABASE_URL)
    async with async_sessionmaker(engine)() as db, db.begin():
        study = await factories.create_study(db)
        site = await factories.create_site(db, study)
        battery = await ingest.create_battery(db, study, await ingest.standard_modules(db))
        await sched.create_protocol(db, study, battery, visits=VISITS)
        rng = random.Random(14)
        start = datetime(2026, 1, 1, tzinfo=UTC)
        now = datetime.now(UTC)
        records = [
            (
                uuid.uuid4(), study.id, site.id, f"P{i:06d}", "enrolled", rng.choice(ZONES),
                start + timedelta(seconds=rng.randrange(365 * 86400)), now, now,
            )
            for i in range(n)
        ]  # fmt: skip
        connection = await driver_connection(db)
        await connection.copy_records_to_table(
            "participants",
            records=records,
            columns=(
                "id", "study_id", "site_id", "participant_code", "status", "timezone",
                "enrolled_at", "created_at", "updated_at",
            ),
        )  # fmt: skip
    async with engine.connect() as connection:
        raw = await driver_connection_of(connection)
        await raw.execute("VACUUM ANALYZE participants")
    await engine.dispose()


async def driver_connection_of(connection: AsyncConnection) -> Any:
    conn = await connection.execution_options(isolation_level="AUTOCOMMIT")
    return (await conn.get_raw_connection()).driver_connection


async def _materialise(settings: Settings) -> tuple[int, float]:
    engine = create_async_engine(settings.DATABASE_URL)
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    started = time.perf_counter()
    async with sessionmaker() as db:
        count = await materialise.materialise_new(db, now=datetime(2026, 1, 1, tzinfo=UTC))
        await db.commit()
    elapsed = time.perf_counter() - started
    async with engine.connect() as connection:
        raw = await driver_connection_of(connection)
        await raw.execute("VACUUM ANALYZE visit_occurrences")
        rows = await raw.fetchval("SELECT count(*) FROM visit_occurrences")
    print(f"materialised {count} participants, {rows} visit rows, in {elapsed:.2f} s")
    await engine.dispose()
    return count, elapsed


async def _due(settings: Settings, repeat: int) -> float:
    engine = create_async_engine(settings.DATABASE_URL)
    async with async_sessionmaker(engine)() as db:
        started = time.perf_counter()
        missed, opened = await sweep.close_and_open(db, now=NOW)
        await db.commit()
        print(
            f"sweep at {NOW:%Y-%m-%d %H:%M}Z: {missed} windows closed to missed, {opened} opened,"
            f" in {(time.perf_counter() - started) * 1000:.0f} ms (first sweep over a year)"
        )
    async with engine.connect() as connection:
        raw = await driver_connection_of(connection)
        await raw.execute("VACUUM ANALYZE visit_occurrences")
        statement = await raw.prepare(DUE_SQL)
        times, rows = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            rows = await statement.fetch(NOW)
            times.append((time.perf_counter() - t0) * 1000)
        plan = await raw.fetch("EXPLAIN (ANALYZE, BUFFERS) " + DUE_SQL, NOW)
    await engine.dispose()
    print(f"due now at {NOW:%Y-%m-%d %H:%M}Z: {len(rows)} visits")
    for line in plan:
        print("  " + line[0])
    median = statistics.median(times)
    fastest = min(times)
    print(f"due query, {repeat} runs, rows fetched: median {median:.2f} ms, min {fastest:.2f} ms")
    return median


async def main(args: argparse.Namespace) -> None:
    name = f"metricis_bench_schedules_{uuid.uuid4().hex[:8]}"
    url = await create_database(name)
    try:
        settings = _settings(url)
        await asyncio.to_thread(migrate, settings)
        print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        await _setup(settings, args.participants)
        count, elapsed = await _materialise(settings)
        due_ms = await _due(settings, args.repeat)
        print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        print(f"schedules: materialise_per_s={count / elapsed:.0f} due_query_ms={due_ms:.2f}")
    finally:
        await drop_database(name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    asyncio.run(main(parser.parse_args()))
