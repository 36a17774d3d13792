"""End-to-end stacks for the resilience tests: every server the test's own, and killable.

A `Stack` is a fresh committed PostgreSQL database (migrated; dropped at the end), a
redis-server on a free port, the REDCap stand-in as a child process, and whatever the test
starts on top: the outbox relay (`python -m server relay`) and Celery workers (prefork, one
child), each a process group of its own, so `kill()` is a SIGKILL of the worker and its child
at once. The test process holds the API (the app on the stack's database, through an ASGI
client) and an engine to watch outcomes with. `open_stack()` kills every process and drops the
database when the test ends, pass or fail.

    async with open_stack(tmp_path) as stack:
        stack.start_relay(); await stack.start_worker("first")
        async with stack.api() as http:
            world = await set_up_study(stack, http)
            submission_id = await submit(http, world, n_trials=12)
        await stack.wait_for(lambda: ..., what="...")
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from httpx import ASGITransport, AsyncClient
from redis import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from server.cli import migrate
from server.core.config import Settings
from server.core.db import create_engine, create_sessionmaker
from server.main import create_app
from server.outbox import service as outbox
from server.outbox.models import JobStatus, OutboxEvent
from server.redcap.models import RedcapSyncState, SyncStatus
from server.studies.models import StudyRole
from tests import factories, services
from tests import ingest_factories as ingest
from tests.conftest import create_database, drop_database, make_settings
from tests.redcap_standin import StandinProcess, classic_project

ROOT = Path(__file__).resolve().parents[2]
SECRET = "e2e-resilience-" + "e" * 40
INSTRUMENT = "cognitive_session"
# Every queue the deployment's workers consume that an outbox topic routes to.
QUEUES = "redcap,maintenance,reports,exports,notifications"


# ----- processes ---------------------------------------------------------------------------------
class Process:
    """A child process leading a process group of its own, its output appended to a log."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: its children die with it
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL to the whole group, like a crash or the OOM killer: no clean-up at all."""
        if self.proc is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL to whatever of the group is left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, chars: int = 3000) -> str:
        return self.output()[-chars:]


class RedisServer:
    """A redis-server on a port of its own that a test may kill and start again, empty."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = services.free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = services.redis_binary()
        self.starts += 1
        # A new directory each time, and no persistence: every start is an empty server.
        data = Path(tempfile.mkdtemp(prefix=f"redis-{self.starts}-", dir=self.workdir))
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(data)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        services.wait_for_port(self.port)

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


# ----- the stack ---------------------------------------------------------------------------------
@dataclass
class Stack:
    tmp: Path
    database_url: str
    redis: RedisServer
    standin: StandinProcess
    token_key: str
    settings: Settings  # the API's (in this process)
    engine: AsyncEngine
    processes: list[Process] = field(default_factory=list)
    clients: list[Redis] = field(default_factory=list)

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return create_sessionmaker(self.engine)

    def env(self, **extra: object) -> dict[str, str]:
        """A server process's environment: this stack's database, Redis, keys and archive."""
        values: dict[str, object] = {
            "ENVIRONMENT": "test",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis.url,
            "JWT_SECRET_KEY": SECRET,
            "REDCAP_TOKEN_KEY": self.token_key,
            "ARCHIVE_DIR": str(self.tmp / "archive"),
            "LOG_LEVEL": "INFO",
            "LOG_JSON": "false",
        }
        values.update(extra)
        return os.environ | {k: str(v) for k, v in values.items()}

    def _process(self, name: str, argv: list[str], env: dict[str, str]) -> Process:
        process = Process(name, argv, env, self.tmp / f"{name}.log")
        self.processes.append(process)
        return process.start()

    def start_relay(self, **settings: object) -> Process:
        """`python -m server relay`, polling every 0.2 s unless told otherwise."""
        env = self.env(**({"RELAY_INTERVAL_SECONDS": 0.2} | settings))
        return self._process("relay", [sys.executable, "-m", "server", "relay"], env)

    async def start_worker(self, name: str, **settings: object) -> Process:
        """`celery -A workers.app worker -Q <QUEUES> --pool=prefork -c 1`; returns
        once it consumes."""
        env = self.env(**settings)
        argv = [
            sys.executable, "-m", "celery", "-A", "workers.app", "worker",
            "-Q", QUEUES, "--pool=prefork", "-c", "1",
            "-n", f"e2e-{name}-{uuid.uuid4().hex[:6]}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--loglevel=INFO",
        ]  # fmt: skip
        worker = self._process(f"worker-{name}", argv, env)
        await self.wait_for(
            lambda: " ready." in worker.output() or not worker.alive,
            timeout=30,
            what=f"worker {name} to start",
        )
        assert worker.alive, f"worker {name} died at start:\n{worker.tail()}"
        return worker

    @asynccontextmanager
    async def api(self) -> AsyncIterator[AsyncClient]:
        """The app on this stack's database and Redis, as a client sees it over HTTP."""
        app = create_app(self.settings)
        try:
            transport = ASGITransport(app=app, client=("10.9.8.7", 40000))
            async with AsyncClient(transport=transport, base_url="http://e2e") as http:
                yield http
        finally:
            await app.state.engine.dispose()
            if app.state.redis is not None:
                await app.state.redis.aclose()

    def redis_client(self) -> Redis:
        """A client of this stack's Redis (closed with the stack), to look into the queues."""
        if not self.clients:
            self.clients.append(Redis.from_url(self.redis.url))
        return self.clients[0]

    def standin_state(self) -> dict[str, Any]:
        """The stand-in's records, call log and hit counter (its /__control__ endpoint)."""
        return self.standin.control("state")

    def diagnostics(self) -> str:
        parts = [
            f"--- {p.name} ({'alive' if p.alive else 'gone'})\n{p.tail()}" for p in self.processes
        ]
        log = self.standin.log_file
        if log.exists():
            parts.append(f"--- stand-in\n{log.read_text(errors='replace')[-1500:]}")
        return "\n".join(parts)

    async def wait_for(
        self, check: Callable[[], object], *, timeout: float, what: str, every: float = 0.1
    ) -> None:
        """Poll check() (a function or a coroutine function) until it answers something true;
        past the deadline, fail with the last answer and every process's log."""
        deadline = time.monotonic() + timeout
        while True:
            answer = check()
            if inspect.isawaitable(answer):
                answer = await answer
            if answer:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:g} s waiting for {what} (last: {answer!r})\n"
                    + self.diagnostics()
                )
            await asyncio.sleep(every)

    async def stop_all(self) -> None:
        for client in self.clients:
            client.close()
        for process in reversed(self.processes):
            await asyncio.to_thread(process.stop, 5.0)


@asynccontextmanager
async def open_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """Database, Redis and REDCap stand-in of the test's own; all gone when the block ends."""
    name = f"metricis_e2e_{uuid.uuid4().hex[:10]}"
    database_url = await create_database(name)
    try:
        await asyncio.to_thread(migrate, make_settings(database_url))
        redis = RedisServer(tmp_path)
        standin = StandinProcess(classic_project(), tmp_path / "standin")
        try:
            redis.start()
            await asyncio.to_thread(standin.start)
            token_key = Fernet.generate_key().decode()
            settings = make_settings(
                database_url,
                JWT_SECRET_KEY=SECRET,
                REDIS_URL=redis.url,
                REDCAP_TOKEN_KEY=token_key,
                ARCHIVE_DIR=str(tmp_path / "archive"),
            )
            engine = create_engine(settings)
            stack = Stack(tmp_path, database_url, redis, standin, token_key, settings, engine)
            try:
                yield stack
            finally:
                await stack.stop_all()
                await engine.dispose()
        finally:
            standin.kill()
            redis.kill()
    finally:
        await drop_database(name)


# ----- a study that sends its sessions to REDCap -------------------------------------------------
@dataclass(frozen=True)
class World:
    """A study with a battery of one SRT module whose metrics go to the stand-in's repeating
    cognitive_session form, and one participant signed in on a device."""

    study_id: uuid.UUID
    battery_id: uuid.UUID
    module_key: str
    module_version: int
    staff: dict[str, str]
    connection_id: str
    participant_code: str
    device: dict[str, str]  # the participant's Authorization header


def session_mapping(module_key: str) -> dict[str, Any]:
    return {
        "record_id_field": "record_id",
        "record_id_source": "participant_code",
        "event": None,
        "repeating_instrument": INSTRUMENT,
        "instance_rule": "per_submission",
        "fields": [
            {"source": "session.date", "field": "session_date"},
            {"source": "session.started_at", "field": "session_started_at"},
            {"source": f"module.{module_key}.mean_rt_ms", "field": "srt_mean_rt_ms"},
            {"source": f"module.{module_key}.n_trials", "field": "srt_n_trials"},
        ],
    }


async def set_up_study(
    stack: Stack,
    http: AsyncClient,
    participant_code: str = "P-001",
    standin: StandinProcess | None = None,
) -> World:
    """Catalogue rows committed directly (a published module, a study, its battery and a
    coordinator); the rest as the coordinator and the device do it, through the API. Its
    connection goes to `standin` (the stack's own unless given)."""
    standin = standin or stack.standin
    async with stack.sessions() as db, db.begin():
        study = await factories.create_study(db)
        site = await factories.create_site(db, study)
        module = await ingest.create_module(db, f"srt_{uuid.uuid4().hex[:6]}")
        battery = await ingest.create_battery(db, study, [module])
        coordinator = await factories.create_user(db)
        await factories.add_member(db, study, coordinator, StudyRole.coordinator)
        staff = await factories.auth_headers(db, stack.settings, coordinator)
    in_study = {"study_id": str(study.id)}

    connection = await http.post(
        "/api/redcap/connections",
        params=in_study,
        json={"api_url": standin.url, "token": standin.token,
              "max_calls_per_minute": 600},
        headers=staff,
    )  # fmt: skip
    assert connection.status_code == 201, connection.text
    connection_id = str(connection.json()["id"])
    mapped = await http.put(
        f"/api/redcap/connections/{connection_id}/mapping",
        json=session_mapping(module.key),
        headers=staff,
    )
    assert mapped.status_code == 200, mapped.text

    enrolled = await http.post(
        "/api/participants",
        params=in_study,
        json={"site_id": str(site.id), "participant_code": participant_code},
        headers=staff,
    )
    assert enrolled.status_code == 201, enrolled.text
    signed_in = await http.post(
        "/api/participants/auth", json={"access_code": enrolled.json()["access_code"]}
    )
    assert signed_in.status_code == 200, signed_in.text
    device = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
    return World(
        study.id, battery.id, module.key, module.version, staff, connection_id,
        participant_code, device,
    )  # fmt: skip


async def submit(http: AsyncClient, world: World, *, n_trials: int) -> uuid.UUID:
    """One visit as the app sends it: start a session, then POST /api/submit (201)."""
    session_id = uuid.uuid4()
    started = await http.post(
        "/api/session/start",
        json={
            "session_id": str(session_id),
            "battery_id": str(world.battery_id),
            "device": {"model": "Pixel 8"},
            "app_version": "2.3.1",
            "client_started_at": datetime.now(UTC).isoformat(),
        },
        headers=world.device,
    )
    assert started.status_code == 201, started.text
    trials = ingest.trials(n_trials)
    body = {
        "client_submission_id": f"e2e-{uuid.uuid4().hex}",
        "session_id": str(session_id),
        "tasks": [
            {
                "module_key": world.module_key,
                "module_version": world.module_version,
                "summary": ingest.summary_of(trials),
                "trials": trials,
            }
        ],
        "client_submitted_at": datetime.now(UTC).isoformat(),
    }
    response = await http.post("/api/submit", json=body, headers=world.device)
    assert response.status_code == 201, response.text
    return uuid.UUID(response.json()["submission_id"])


# ----- what happened -----------------------------------------------------------------------------
async def sync_states(stack: Stack, ids: list[uuid.UUID]) -> dict[uuid.UUID, RedcapSyncState]:
    async with stack.sessions() as db:
        rows = await db.scalars(
            select(RedcapSyncState).where(RedcapSyncState.submission_id.in_(ids))
        )
        return {s.submission_id: s for s in rows}


async def sync_jobs(stack: Stack, ids: list[uuid.UUID]) -> dict[uuid.UUID, OutboxEvent]:
    """Each submission's REDCap sync job: its outbox row (the latest, after a resync)."""
    async with stack.sessions() as db:
        rows = await db.scalars(
            select(OutboxEvent)
            .where(
                OutboxEvent.topic == outbox.REDCAP_SYNC_SUBMISSION,
                OutboxEvent.subject_id.in_(ids),
            )
            .order_by(OutboxEvent.created_at)
        )
        return {j.subject_id: j for j in rows if j.subject_id is not None}


async def outbox_rows(stack: Stack, ids: list[uuid.UUID]) -> list[OutboxEvent]:
    async with stack.sessions() as db:
        return list(await db.scalars(select(OutboxEvent).where(OutboxEvent.subject_id.in_(ids))))


async def all_synced(stack: Stack, ids: list[uuid.UUID]) -> bool:
    states = await sync_states(stack, ids)
    return len(states) == len(ids) and all(s.status == SyncStatus.synced for s in states.values())


async def all_done(stack: Stack, ids: list[uuid.UUID]) -> bool:
    """Every outbox row of these submissions finished, and Redis holds no message: nothing
    queued, nothing delivered and not yet acknowledged."""
    events = await outbox_rows(stack, ids)
    if not events or any(e.finished_at is None for e in events):
        return False
    redis = stack.redis_client()
    queued = redis.llen("redcap") or redis.llen("maintenance") or redis.llen("reports")
    return not (queued or redis.hlen("unacked"))


async def dead_letters(stack: Stack) -> list[OutboxEvent]:
    """The failed jobs: each failed outbox row is its own dead letter."""
    async with stack.sessions() as db:
        return list(
            await db.scalars(select(OutboxEvent).where(OutboxEvent.status == JobStatus.failed))
        )


def session_rows(state: dict[str, Any], record_id: str) -> list[dict[str, Any]]:
    """The stand-in's stored cognitive_session rows of one record, by instance."""
    rows = [
        r
        for r in state["records"]
        if r.get("record_id") == record_id and r.get("redcap_repeat_instrument") == INSTRUMENT
    ]
    return sorted(rows, key=lambda r: int(r["redcap_repeat_instance"]))


def record_imports(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Record imports in the stand-in's call log (since it last started), oldest first."""
    return [c for c in state["calls"] if c["content"] == "record" and c["action"] == "import"]
