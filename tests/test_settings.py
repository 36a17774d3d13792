"""Settings: PostgreSQL and Redis only; production refuses a generated or placeholder secret;
development keeps the secret it generates, one for every process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.core.config import ConfigurationError, load_settings

ROOT = Path(__file__).resolve().parent.parent
STRONG = "s" * 48
PG = "postgresql+asyncpg://metricis@db/metricis"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key in {"JWT_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ENVIRONMENT"}:
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_production_refuses_generated_secret() -> None:
    with pytest.raises(ConfigurationError, match="JWT_SECRET_KEY"):
        load_settings(ENVIRONMENT="production", DATABASE_URL=PG, REDIS_URL="redis://r:6379/0")


@pytest.mark.parametrize("secret", ["changeme", "development", "short-but-real"])
def test_production_refuses_placeholder_or_short_secret(secret: str) -> None:
    with pytest.raises(ConfigurationError, match="JWT_SECRET_KEY") as info:
        load_settings(
            ENVIRONMENT="production",
            JWT_SECRET_KEY=secret,
            DATABASE_URL=PG,
            REDIS_URL="redis://r:6379/0",
        )
    assert secret not in str(info.value)  # the message names the setting, not its value


@pytest.mark.parametrize("environment", ["development", "test", "production"])
def test_sqlite_is_refused_with_a_clear_message(environment: str) -> None:
    with pytest.raises(ConfigurationError, match="SQLite is not supported") as info:
        load_settings(
            ENVIRONMENT=environment,
            JWT_SECRET_KEY=STRONG,
            DATABASE_URL="sqlite+aiosqlite:///./var/metricis.db",
            REDIS_URL="redis://r/0",
        )
    assert "postgresql+asyncpg://" in str(info.value)


def test_a_missing_database_or_redis_says_how_to_get_one() -> None:
    with pytest.raises(ConfigurationError, match=r"DATABASE_URL is not set.*make run"):
        load_settings(REDIS_URL="redis://r/0")
    with pytest.raises(ConfigurationError, match=r"REDIS_URL.*make run"):
        load_settings(DATABASE_URL=PG)


def test_production_accepts_real_configuration() -> None:
    settings = load_settings(
        ENVIRONMENT="production",
        JWT_SECRET_KEY=STRONG,
        DATABASE_URL=PG,
        REDIS_URL="redis://r:6379/0",
        ALLOWED_ORIGINS="https://a.org, https://b.org",
        REDCAP_TOKEN_KEY="mVc9xHyz1Qv3Yk0lB7aT2cN5pE8rW4uJ6sD0fG1hK2M=",
    )
    assert settings.ALLOWED_ORIGINS == ["https://a.org", "https://b.org"]
    assert settings.log_json is True


def _secret_in_a_new_process(cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "JWT_SECRET_KEY"}
    env.update(ENVIRONMENT="development", DATABASE_URL=PG, REDIS_URL="redis://r/0")
    env["PYTHONPATH"] = str(ROOT)
    code = (
        "from server.core.config import load_settings;"
        "print(load_settings().JWT_SECRET_KEY.get_secret_value())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_development_processes_share_one_kept_secret(tmp_path: Path) -> None:
    # make run's web process encrypts a REDCap token with a key derived from this secret and
    # its worker decrypts it: two processes, and a restart, must see the same one.
    web = _secret_in_a_new_process(tmp_path)
    worker = _secret_in_a_new_process(tmp_path)
    assert len(web) >= 32 and web == worker
    kept = tmp_path / "var" / "secrets" / "jwt_secret_key"
    assert kept.read_text() == web and (kept.stat().st_mode & 0o077) == 0
    elsewhere = tmp_path / "another-checkout"
    elsewhere.mkdir()
    assert _secret_in_a_new_process(elsewhere) != web


def test_a_redcap_token_stored_by_one_process_decrypts_in_another(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"JWT_SECRET_KEY", "REDCAP_TOKEN_KEY"}}
    env.update(ENVIRONMENT="development", DATABASE_URL=PG, REDIS_URL="redis://r/0")
    env["PYTHONPATH"] = str(ROOT)
    run = [sys.executable, "-c"]
    encrypt = (
        "from server.core.config import load_settings; from server.core import crypto;"
        "box = crypto.token_box(load_settings());"
        "print(box.encrypt('ABCDEF0123456789ABCDEF0123456789').decode())"
    )
    stored = subprocess.run(
        [*run, encrypt], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    decrypt = (
        "import sys; from server.core.config import load_settings; from server.core import crypto;"
        "print(crypto.token_box(load_settings()).decrypt(sys.argv[1].encode()))"
    )
    read = subprocess.run(
        [*run, decrypt, stored], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert read == "ABCDEF0123456789ABCDEF0123456789"


def test_server_process_refuses_to_start_and_says_why(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"JWT_SECRET_KEY", "DATABASE_URL"}}
    env.update(ENVIRONMENT="production", REDIS_URL="redis://127.0.0.1:6379/0", PYTHONPATH=str(ROOT))
    env["DATABASE_URL"] = PG
    result = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--port", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "JWT_SECRET_KEY" in result.stderr
