"""Export benchmark: 1,000,000 trial rows exported as trial-level CSV and as Parquet, beside
PostgreSQL's own COPY of the same rows into /dev/null (the physical limit); then as SPSS .sav
and Stata .dta (made from the Parquet), a line each.

    make bench-export        (python -m tests.bench.export)

A fresh database on TEST_DATABASE_URL's server, migrated, seeded in SQL: one study, the
built-in simple_rt module, SESSIONS sessions of one submission with one task of
TRIALS_PER_TASK trials. Each export runs in a child process (tests.bench.export_worker)
that imports the worker's app (workers.app) and runs server.exports.build.build as the task
does, with local storage; the child reports its wall time and its peak RSS (VmHWM). rows/s
is the export's trial rows over that whole build: selection, COPY, files, zip and publish.
The COPY control streams the export's own trial SELECT (the same rows, order and columns)
to /dev/null.
Last line: `export: csv_rows_per_s=A parquet_rows_per_s=B copy_rows_per_s=C ratio=min(A,B)/C
peak_mb=M` (M: the larger of the CSV and Parquet children's peaks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from server.cli import migrate
from server.core.config import Settings
from server.core.db import create_engine, create_sessionmaker
from server.exports.models import Export
from server.exports.query import trial_select_sql
from tests import factories, services
from tests import ingest_factories as ingest
from tests.conftest import create_database, drop_database

SESSIONS = 10_000
TRIALS_PER_TASK = 100


def _settings(url: str, archive: str) -> Settings:
    return Settings(
        ENVIRONMENT="test",
        DATABASE_URL=url,
        REDIS_URL=f"{services.TEST_REDIS_URL}/0",
        JWT_SECRET_KEY="bench-export-" + "e" * 40,
        LOG_LEVEL="WARNING",
        ARCHIVE_DIR=archive,
    )  # type: ignore[call-arg]


async def seed(url: str) -> uuid.UUID:
    engine = create_engine(_settings(url, "/tmp"))
    sessions = create_sessionmaker(engine)
    from server.modules.builtin import load_builtins

    async with sessions() as db, db.begin():
        module = (await load_builtins(db))["simple_rt"]
        study = await factories.create_study(db, code="BENCH")
        site = await factories.create_site(db, study, code="S1")
        battery = await ingest.create_battery(db, study, [module])
        study_id, site_id, battery_id = study.id, site.id, battery.id
    await engine.dispose()
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        await conn.execute(
            """
            INSERT INTO participants (id, study_id, site_id, participant_code, status, timezone,
                                      enrolled_at, created_at, updated_at)
            SELECT gen_random_uuid(), $1, $2, 'P-' || lpad(n::text, 5, '0'), 'active', 'UTC',
                   now(), now(), now()
            FROM generate_series(1, $3) n
            """,
            study_id, site_id, SESSIONS // 10,
        )  # fmt: skip
        await conn.execute(
            """
            INSERT INTO assessment_sessions (id, participant_id, study_id, battery_id, status,
                device, app_version, client_started_at, started_at)
            SELECT gen_random_uuid(), p.id, $1, $2, 'completed', '{}', '1',
                   now() - (k || ' days')::interval, now() - (k || ' days')::interval
            FROM participants p, generate_series(1, 10) k WHERE p.study_id = $1
            """,
            study_id, battery_id,
        )  # fmt: skip
        await conn.execute(
            """
            INSERT INTO submissions (id, client_submission_id, participant_id, study_id,
                session_id, checksum, raw_payload, received_at, status)
            SELECT gen_random_uuid(), a.id::text, a.participant_id, a.study_id, a.id,
                   md5(a.id::text) || md5(a.id::text), '\\x7b7d', a.started_at, 'accepted'
            FROM assessment_sessions a WHERE a.study_id = $1
            """,
            study_id,
        )
        await conn.execute(
            """
            INSERT INTO submission_tasks (submission_id, position, module_id, module_key,
                module_version, summary, trials, n_trials)
            SELECT s.id, 0, $2, 'simple_rt', 1, '{"n_trials": 100}',
                   (SELECT json_agg(json_build_object(
                        'trial_index', i, 'stimulus_onset_ms', i * 1500,
                        'rt_ms', CASE WHEN i % 17 = 0 THEN NULL ELSE 250 + (i * 7) % 200 END,
                        'responded', i % 17 <> 0, 'anticipation', false))
                    FROM generate_series(0, $3 - 1) i),
                   $3
            FROM submissions s WHERE s.study_id = $1
            """,
            study_id, module.id, TRIALS_PER_TASK,
        )  # fmt: skip
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return study_id  # type: ignore[no-any-return]


async def new_export(
    url: str, study_id: uuid.UUID, formats: list[str], **filters: object
) -> uuid.UUID:
    engine = create_engine(_settings(url, "/tmp"))
    async with create_sessionmaker(engine)() as db, db.begin():
        export = Export(study_id=study_id, filters={"site_ids": None, "modules": [], **filters},
                        formats=formats)  # fmt: skip
        db.add(export)
        await db.flush()
        export_id = export.id
    await engine.dispose()
    return export_id


def run_child(url: str, archive: str, export_id: uuid.UUID) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "tests.bench.export_worker", url, archive, str(export_id)],
        check=False, capture_output=True, text=True,
    )  # fmt: skip
    if out.returncode:
        raise RuntimeError(f"the export process failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def copy_to_devnull(url: str, export_id: uuid.UUID) -> float:
    from sqlalchemy import select

    from server.exports.columns import trial_columns
    from server.modules.models import Module

    engine = create_engine(_settings(url, "/tmp"))
    async with create_sessionmaker(engine)() as db:
        module = await db.scalar(select(Module).where(Module.key == "simple_rt"))
    await engine.dispose()
    sql = trial_select_sql(export_id, "simple_rt", 1, trial_columns(module, None))
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        started = time.perf_counter()
        await conn.copy_from_query(sql, output="/dev/null", format="csv", header=True)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def main() -> None:
    name = f"metricis_bench_export_{uuid.uuid4().hex[:8]}"
    url = await create_database(name)
    archive = tempfile.mkdtemp(prefix="bench-export-")
    try:
        await asyncio.to_thread(migrate, _settings(url, archive))
        started = time.perf_counter()
        study_id = await seed(url)
        rows = SESSIONS * TRIALS_PER_TASK
        print(f"seeded {rows:,} trial rows in {time.perf_counter() - started:.1f} s")
        figures: dict[str, dict[str, float]] = {}
        for fmt in ("csv", "parquet"):
            export_id = await new_export(url, study_id, [fmt])
            figures[fmt] = await asyncio.to_thread(run_child, url, archive, export_id)
            rate = rows / figures[fmt]["seconds"]
            print(f"{fmt}: {figures[fmt]['seconds']:.2f} s, {rate:,.0f} rows/s, "
                  f"worker peak RSS {figures[fmt]['peak_mb']:.0f} MB while exporting "
                  f"({figures[fmt]['import_peak_mb']:.0f} MB at its imports)")  # fmt: skip
        for fmt in ("sav", "dta"):
            run = await asyncio.to_thread(
                run_child, url, archive, await new_export(url, study_id, [fmt])
            )
            print(f"{fmt}: {run['seconds']:.2f} s, {rows / run['seconds']:,.0f} rows/s, "
                  f"worker peak RSS {run['peak_mb']:.0f} MB while exporting")  # fmt: skip
        # Flat as the study grows: the same Parquet export of the last three days' sessions
        # (3 of the 10 days the seed spreads them over: 300,000 rows).
        since = (datetime.now(UTC) - timedelta(days=3)).date().isoformat()
        part = await asyncio.to_thread(
            run_child, url, archive,
            await new_export(url, study_id, ["parquet"], date_from=since),
        )  # fmt: skip
        print(f"parquet of {rows * 3 // 10:,} rows: {part['seconds']:.2f} s, worker peak RSS "
              f"{part['peak_mb']:.0f} MB ({figures['parquet']['peak_mb']:.0f} MB for "
              f"{rows:,})")  # fmt: skip
        copy_s = await copy_to_devnull(url, export_id)
        print(f"COPY to /dev/null: {copy_s:.2f} s, {rows / copy_s:,.0f} rows/s")
        csv_rate, parquet_rate = (
            rows / figures["csv"]["seconds"],
            rows / figures["parquet"]["seconds"],
        )
        copy_rate = rows / copy_s
        peak = max(f["peak_mb"] for f in figures.values())
        print(
            f"export: csv_rows_per_s={csv_rate:.0f} parquet_rows_per_s={parquet_rate:.0f} "
            f"copy_rows_per_s={copy_rate:.0f} ratio={min(csv_rate, parquet_rate) / copy_rate:.2f} "
            f"peak_mb={peak:.0f}"
        )
    finally:
        await drop_database(name)
        subprocess.run(["rm", "-rf", archive], check=False)


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__).parse_args()
    asyncio.run(main())
