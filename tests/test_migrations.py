"""`alembic upgrade head && downgrade base && upgrade head` on a fresh database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from server.modules.builtin import load_builtins
from server.modules.builtin_backfill import NORM_KEYS
from tests.conftest import create_database, drop_database

ROOT = Path(__file__).resolve().parent.parent


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return {r["tablename"] for r in rows}


def _alembic(url: str, *args: str) -> None:
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.mark.slow
async def test_upgrade_downgrade_upgrade_round_trip() -> None:
    name = f"metricis_mig_{uuid.uuid4().hex[:8]}"
    url = await create_database(name)
    try:
        _alembic(url, "upgrade", "head")
        tables = await _tables(url)
        assert {
            "users",
            "studies",
            "sites",
            "study_memberships",
            "study_membership_sites",
            "participants",
            "participant_contacts",
            "user_sessions",
        } <= tables
        _alembic(url, "downgrade", "base")
        assert await _tables(url) == {"alembic_version"}
        _alembic(url, "upgrade", "head")
        assert await _tables(url) == tables
        # No model change without its migration: autogenerate finds nothing left to do.
        _alembic(url, "check")
    finally:
        await drop_database(name)


@pytest.mark.slow
async def test_0021_gives_old_built_in_rows_their_psychometrics_and_nothing_else() -> None:
    name = f"metricis_mig_{uuid.uuid4().hex[:8]}"
    url = await create_database(name)
    try:
        _alembic(url, "upgrade", "0020")
        engine = create_async_engine(url)
        async with async_sessionmaker(engine)() as db, db.begin():
            await load_builtins(db)
        conn = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            rows = await conn.fetch("SELECT id, key, metrics FROM modules")
            declared = {r["key"]: json.loads(r["metrics"]) for r in rows}
            # As rows written before the built-ins declared them: no norms in any metric.
            for row in rows:
                bare = [
                    {k: v for k, v in m.items() if k not in NORM_KEYS} for m in declared[row["key"]]
                ]
                await conn.execute(
                    "UPDATE modules SET metrics = $1::jsonb WHERE id = $2",
                    json.dumps(bare),
                    row["id"],
                )
            # A row that is not the built-in's (its own metric set) stays as it is.
            own = json.dumps([{"key": "own"}])
            await conn.execute(
                "UPDATE modules SET metrics = $1::jsonb WHERE key = $2", own, "digit_span"
            )
            _alembic(url, "upgrade", "head")
            after = {
                r["key"]: json.loads(r["metrics"])
                for r in await conn.fetch("SELECT key, metrics FROM modules")
            }
        finally:
            await conn.close()
            await engine.dispose()
        assert after["digit_span"] == [{"key": "own"}]

        def shown(metrics: list[dict[str, object]]) -> list[dict[str, object]]:
            return [{k: v for k, v in m.items() if v is not None} for m in metrics]

        for key, metrics in after.items():
            if key != "digit_span":
                assert shown(metrics) == shown(declared[key]), key
        mean_rt = next(m for m in after["simple_rt"] if m["key"] == "mean_rt_ms")
        assert mean_rt["reliability"]["test_retest_r"] == 0.80
    finally:
        await drop_database(name)
