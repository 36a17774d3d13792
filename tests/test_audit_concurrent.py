"""Two processes writing audit entries at once never fork the chain; the application's own
database role (DATABASE_APP_ROLE) can write entries but neither edit nor delete them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from server.cli import migrate
from tests import services
from tests.conftest import _admin_connection, create_database, drop_database, make_settings

ROOT = Path(__file__).resolve().parents[1]
PER_WRITER = 150


@pytest.fixture
async def app_role_db(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[str, str]]:
    """A fresh database migrated with DATABASE_APP_ROLE set; (superuser URL, the role's URL)."""
    role = f"metricis_app_{uuid.uuid4().hex[:8]}"
    name = f"metricis_audit_{uuid.uuid4().hex[:8]}"
    admin = await _admin_connection()
    await admin.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        url = await create_database(name)
        monkeypatch.setenv("DATABASE_APP_ROLE", role)
        await asyncio.to_thread(migrate, make_settings(url))
        yield url, make_url(url).set(username=role).render_as_string(hide_password=False)
    finally:
        await drop_database(name)
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


def _env(url: str) -> dict[str, str]:
    return os.environ | {
        "ENVIRONMENT": "test",
        "DATABASE_URL": url,
        "REDIS_URL": services.redis_db_url(),
        "JWT_SECRET_KEY": "audit-concurrent-" + "a" * 40,
    }


def _verify(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "audit", "verify"],
        cwd=ROOT,
        env=_env(url),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
async def test_two_writers_at_once_keep_one_chain(
    app_role_db: tuple[str, str], tmp_path: Path
) -> None:
    admin_url, app_url = app_role_db
    go = tmp_path / "go"
    writers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.audit_writer", app_url, str(PER_WRITER), str(go)],
            cwd=ROOT,
            env=_env(app_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for writer in writers:
            assert writer.stdout is not None
            assert (await asyncio.to_thread(writer.stdout.readline)).strip() == "ready"
        go.touch()
        results = [await asyncio.to_thread(w.communicate, timeout=120) for w in writers]
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
    assert [w.returncode for w in writers] == [0, 0], results

    verified = _verify(app_url)  # the application's role can read the chain, too

    assert verified.returncode == 0, verified.stderr
    assert f"intact: {2 * PER_WRITER} entries" in verified.stdout
    conn = await asyncpg.connect(admin_url.replace("+asyncpg", ""))
    try:
        actors = await conn.fetch("SELECT actor_id FROM audit_entries ORDER BY seq")
        assert len({r["actor_id"] for r in actors}) == 2
        # A superuser's edit, past the trigger: verify names the entry.
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute("UPDATE audit_entries SET object_type = 'site' WHERE seq = 7")
    finally:
        await conn.close()
    broken = _verify(app_url)
    assert broken.returncode == 1
    assert "broken at seq 7" in broken.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_entries SET action = 'x'",
        "DELETE FROM audit_entries",
        "TRUNCATE audit_entries",
        "DELETE FROM audit_chain_head",
    ],
)
async def test_the_app_role_cannot_change_entries(
    app_role_db: tuple[str, str], statement: str
) -> None:
    _, app_url = app_role_db
    conn = await asyncpg.connect(app_url.replace("+asyncpg", ""))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await conn.execute(statement)
    finally:
        await conn.close()
