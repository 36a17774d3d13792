"""Settings, read once from the environment and `.env`, never at import time."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import secrets
from functools import lru_cache
from typing import Annotated, Literal

from fastapi import Depends, Request
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from server.core.config_reminders import ReminderSettings

_PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "dev", "development"}


# Letters, digits and hyphens in dot-separated labels (no wildcards: each host is named).
_HOST_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*")


def _is_network(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings, ReminderSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    ENVIRONMENT: Literal["development", "test", "production"] = "development"
    LOG_LEVEL: str = "INFO"
    LOG_JSON: bool | None = None

    # PostgreSQL (postgresql+asyncpg://) and Redis, always: `make run` starts embedded ones
    # (python -m devservers) and sets both when they are not given.
    DATABASE_URL: str = ""
    DATABASE_POOL_SIZE: int = 10
    REDIS_URL: str = ""
    # Development only: where a generated JWT_SECRET_KEY is kept, so that every process of a
    # `make run` (web, worker, beat, relay) and the next run share one.
    SECRETS_DIR: str = "./var/secrets"

    JWT_SECRET_KEY: SecretStr = Field(default_factory=lambda: SecretStr(secrets.token_urlsafe(48)))
    JWT_ALGORITHM: Literal["HS256", "HS384", "HS512"] = "HS256"
    ACCESS_TOKEN_EXPIRE_MINUTES: int = Field(default=15, ge=1)
    REFRESH_TOKEN_EXPIRE_DAYS: int = Field(default=14, ge=1)
    PASSWORD_MIN_LENGTH: int = Field(default=12, ge=8)
    ACCESS_CODE_EXPIRE_HOURS: int = Field(default=72, ge=1)
    # Long: a participant's phone may be offline for weeks between visits.
    PARTICIPANT_TOKEN_EXPIRE_DAYS: int = Field(default=90, ge=1)

    # Submissions: a body larger than this (compressed or not) answers 413.
    MAX_SUBMISSION_BYTES: int = Field(default=5 * 1024 * 1024, ge=1024)
    MAX_SYNC_BYTES: int = Field(default=20 * 1024 * 1024, ge=1024)
    # The ingest benchmark's yardstick: parse and validate a submission, write nothing.
    ENABLE_REFERENCE_ENDPOINT: bool = False

    ALLOWED_ORIGINS: Annotated[list[str], NoDecode] = ["http://localhost:5173"]
    TRUSTED_PROXIES: Annotated[list[str], NoDecode] = []

    RATE_LIMIT_ENABLED: bool = True
    RATE_LIMIT_DEFAULT: str = "60/minute"
    RATE_LIMIT_LOGIN: str = "10/minute"
    RATE_LIMIT_PARTICIPANT_AUTH: str = "10/minute"
    # How long a request waits for the limiter's Redis; past it the request goes through
    # unlimited (fail open, logged), so a hung Redis slows limited routes by this at most.
    RATE_LIMIT_TIMEOUT_SECONDS: float = Field(default=0.5, gt=0)

    # The submission archive (server.archive): a local directory, or an S3-compatible bucket.
    ARCHIVE_BACKEND: Literal["local", "s3"] = "local"
    ARCHIVE_DIR: str = "./var/archive"
    ARCHIVE_S3_BUCKET: str = ""
    ARCHIVE_S3_ENDPOINT_URL: str = ""
    ARCHIVE_S3_REGION: str = "us-east-1"
    # Both empty: boto3's default credential chain (environment, profile, instance role).
    ARCHIVE_S3_ACCESS_KEY_ID: str = ""
    ARCHIVE_S3_SECRET_ACCESS_KEY: SecretStr = SecretStr("")

    # The worker tier (workers/, the relay included: workers.relay).
    # Redis gives a message a worker reserved but never started back after this.
    CELERY_VISIBILITY_TIMEOUT: int = Field(default=1800, ge=60)
    # Beat (workers.app): the running beat holds a lock in Redis (redbeat) and renews it at
    # least five times per timeout; a second beat waits for it. A beat that dies (kill -9, a
    # lost host) leaves the lock to expire, so its successor schedules after at most this long.
    BEAT_LOCK_TIMEOUT_SECONDS: int = Field(default=30, ge=5)
    # A task's hard time limit, and how long a published row may wait for a run before it is
    # published again (its message was lost). A dead run comes back sooner: its lock is free.
    OUTBOX_LEASE_SECONDS: int = Field(default=300, ge=1)
    # An export's own hard time limit: a large study streams for minutes, holding its run lock.
    EXPORT_TIME_LIMIT_SECONDS: int = Field(default=4 * 3600, ge=1)
    # Tests only: a pause after each block an export streams, to kill a worker mid-export.
    EXPORT_TEST_PAUSE_SECONDS: float = Field(default=0.0, ge=0)
    RELAY_INTERVAL_SECONDS: float = Field(default=1.0, gt=0)
    RELAY_BATCH_SIZE: int = Field(default=500, ge=1)
    # Transient errors: retried after 2, 4, 8, ... s (capped), then failed for good.
    TASK_MAX_RETRIES: int = Field(default=8, ge=0)
    TASK_RETRY_BACKOFF_MAX: int = Field(default=600, ge=1)

    # REDCap (server.redcap). Fernet key(s) for the API tokens stored at rest, comma-separated:
    # the first encrypts, all decrypt (rotation). Empty outside production: a key derived from
    # JWT_SECRET_KEY. Generate one with `python -c "from cryptography.fernet import Fernet;
    # print(Fernet.generate_key().decode())"`.
    REDCAP_TOKEN_KEY: SecretStr = SecretStr("")
    REDCAP_CONNECT_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0)
    REDCAP_TIMEOUT_SECONDS: float = Field(default=60.0, gt=0)
    # Calls per REDCap server are spread over windows of this length (at the connection's
    # max_calls_per_minute rate); shorter windows mean smaller bursts.
    REDCAP_THROTTLE_WINDOW_SECONDS: int = Field(default=10, ge=1, le=60)
    # An import call carries at most this many rows and bytes of JSON (REDCap fails on large
    # calls in practice); exports ask for this many records per call.
    REDCAP_IMPORT_CHUNK_ROWS: int = Field(default=500, ge=1)
    REDCAP_IMPORT_CHUNK_BYTES: int = Field(default=2_000_000, ge=10_000)
    REDCAP_EXPORT_CHUNK_RECORDS: int = Field(default=1000, ge=1)
    # Production sends REDCap tokens only to public addresses over https (server.redcap.
    # url_policy): these host names and/or networks (CIDR) are let through all the same, for
    # a REDCap server inside the hospital network. Ignored outside production.
    REDCAP_ALLOWED_HOSTS: Annotated[list[str], NoDecode] = []

    # PDF reports (server.reports): the paper size, and how long a download link works.
    REPORT_PAGE_SIZE: Literal["A4", "Letter"] = "A4"
    REPORT_LINK_TTL_SECONDS: int = Field(default=300, ge=10, le=86400)

    # Set when the secret came from the default factory, so production can refuse it.
    jwt_secret_generated: bool = Field(default=False, exclude=True)

    @field_validator("ALLOWED_ORIGINS", "TRUSTED_PROXIES", "REDCAP_ALLOWED_HOSTS", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("REDCAP_ALLOWED_HOSTS")
    @classmethod
    def _hosts_or_networks(cls, value: list[str]) -> list[str]:
        # Compared with a URL's host as urllib reads it: lower case, no brackets, no final dot.
        entries = [v.strip().strip("[]").rstrip(".").lower() for v in value]
        for entry in entries:
            if not (_is_network(entry) or _HOST_NAME.fullmatch(entry)):
                raise ValueError(
                    "each entry must be a host name, an address or a CIDR network "
                    "(e.g. redcap.hospital.org,10.20.0.0/16)"
                )
        return entries

    @model_validator(mode="before")
    @classmethod
    def _mark_generated_secret(cls, data: object) -> object:
        if isinstance(data, dict) and not any(k.upper() == "JWT_SECRET_KEY" for k in data):
            data["jwt_secret_generated"] = True
        return data

    @field_validator("DATABASE_URL")
    @classmethod
    def _postgresql_only(cls, value: str) -> str:
        if not value:
            raise ValueError(
                "DATABASE_URL is not set: give a PostgreSQL URL "
                "(postgresql+asyncpg://user:pass@host:5432/db), or start the stack with "
                "`make run`, which starts an embedded PostgreSQL when none is given"
            )
        if value.startswith("sqlite"):
            raise ValueError(
                "SQLite is not supported: Metricis runs on PostgreSQL only. Set DATABASE_URL "
                "to postgresql+asyncpg://user:pass@host:5432/db, or leave it unset under "
                "`make run`, which starts an embedded PostgreSQL"
            )
        if not value.startswith("postgresql+asyncpg://"):
            raise ValueError("DATABASE_URL must start with postgresql+asyncpg://")
        return value

    @field_validator("REDIS_URL")
    @classmethod
    def _redis_required(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                "REDIS_URL must be a redis:// URL (the Celery broker and the rate limits), "
                "or leave it unset under `make run`, which starts an embedded Redis"
            )
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        for key in self.redcap_token_keys_configured:
            if not _is_fernet_key(key):
                raise ValueError(
                    "REDCAP_TOKEN_KEY must be one or more comma-separated Fernet keys "
                    "(32 url-safe base64-encoded bytes)"
                )
        if self.ENVIRONMENT == "development" and self.jwt_secret_generated:
            # One secret for every process of the deployment, kept across restarts: a token
            # signed (or a REDCap token encrypted) by the web process must read in the worker.
            self.JWT_SECRET_KEY = SecretStr(kept_secret(self.SECRETS_DIR, "jwt_secret_key"))
        if self.ENVIRONMENT != "production":
            return self
        secret = self.JWT_SECRET_KEY.get_secret_value()
        if self.jwt_secret_generated or secret.lower() in _PLACEHOLDER_SECRETS:
            raise ValueError(
                "JWT_SECRET_KEY must be set to a strong secret in production "
                "(it is missing or a placeholder)"
            )
        if len(secret) < 32:
            raise ValueError("JWT_SECRET_KEY must be at least 32 characters in production")
        if not self.redcap_token_keys_configured:
            raise ValueError(
                "REDCAP_TOKEN_KEY must be set in production (a Fernet key encrypting the "
                "REDCap API tokens at rest)"
            )
        if self.PUBLIC_BASE_URL and not self.PUBLIC_BASE_URL.startswith("https://"):
            # Twilio's delivery reports carry the participant's number.
            raise ValueError("PUBLIC_BASE_URL must be an https URL in production")
        return self

    @property
    def redcap_token_keys_configured(self) -> list[str]:
        return [k.strip() for k in self.REDCAP_TOKEN_KEY.get_secret_value().split(",") if k.strip()]

    @property
    def log_json(self) -> bool:
        if self.LOG_JSON is not None:
            return self.LOG_JSON
        return self.ENVIRONMENT == "production"


def kept_secret(folder: str, name: str) -> str:
    """The secret in `folder/name`, created on first use (0600). Two processes starting at
    once both read the one that was written first (O_EXCL), never two different ones."""
    path = os.path.join(folder, name)
    try:
        with open(path, encoding="ascii") as existing:
            if value := existing.read().strip():
                return value
    except FileNotFoundError:
        pass
    os.makedirs(folder, mode=0o700, exist_ok=True)
    value = secrets.token_urlsafe(48)
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(value)
        out.flush()
        os.fsync(out.fileno())
    try:
        # link() fails if another process got there first; then theirs is the one.
        os.link(tmp, path)
    except FileExistsError:
        with open(path, encoding="ascii") as existing:
            value = existing.read().strip()
    finally:
        os.unlink(tmp)
    return value


def _is_fernet_key(key: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(key.encode())) == 32
    except (binascii.Error, ValueError):
        return False


class ConfigurationError(RuntimeError):
    """Settings that cannot run; the message names the setting and never echoes its value."""


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        # pydantic's own text repeats the input, secrets included: keep only the reasons.
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid configuration: {reasons}") from None


@lru_cache
def get_settings() -> Settings:
    return load_settings()


def get_settings_dep(request: Request) -> Settings:
    """The running app's settings (app.state), as a route dependency: `settings: AppSettings`."""
    settings: Settings = request.app.state.settings
    return settings


AppSettings = Annotated[Settings, Depends(get_settings_dep)]
