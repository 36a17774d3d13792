"""Production refuses to start with a generated or placeholder secret, or with SQLite."""

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


def test_production_refuses_sqlite() -> None:
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        load_settings(ENVIRONMENT="production", JWT_SECRET_KEY=STRONG, REDIS_URL="redis://r/0")


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
    assert settings.rate_limit_storage_uri == "redis://r:6379/0"


def test_development_defaults_are_the_embedded_default() -> None:
    settings = load_settings()
    assert settings.is_sqlite and settings.broker_url == "filesystem://"
    assert settings.rate_limit_storage_uri == "memory://"


def test_server_process_refuses_to_start_and_says_why(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"JWT_SECRET_KEY", "DATABASE_URL"}}
    env.update(ENVIRONMENT="production", REDIS_URL="redis://127.0.0.1:6379/0", PYTHONPATH=str(ROOT))
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
