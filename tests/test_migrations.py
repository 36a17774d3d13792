"""`alembic upgrade head && downgrade base && upgrade head` on a fresh database."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

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
