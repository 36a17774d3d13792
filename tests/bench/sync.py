"""REDCap sync benchmark: acknowledged submissions drained to the REDCap stand-in by the
outbox relay and 2 Celery worker processes, measured in the same run as the plain way (one
`import_records` call per submission) and the stand-in's own ceiling (pre-built batches sent
back to back by one sender, as the sync has one per project).

    make bench-sync        (python -m tests.bench.sync)

A fresh PostgreSQL database on TEST_DATABASE_URL's server, a redis-server of its own, the
stand-in as a child process (`python -m tests.redcap_standin`, its records in memory),
`python -m server relay` and `celery -A workers.app worker -Q redcap -c 2`, all with production
settings. The stand-in answers every call LATENCY_MS late in all three measurements (see
there). It prints the figures, where the CPU went while the backlog drained, and last the
summary line the issue asks for. `--profile` adds py-spy samples of the relay, the worker and
the stand-in; `--keep` keeps the logs and the database.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from cryptography.fernet import Fernet
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.assessment_sessions.models import AssessmentSession, SessionStatus
from server.cli import migrate
from server.core.config import Settings
from server.core.crypto import token_box
from server.core.db import create_engine, create_sessionmaker
from server.outbox import service as outbox
from server.outbox.models import JobStatus, OutboxEvent
from server.participants.models import Participant
from server.redcap import records
from server.redcap import service as redcap_service
from server.redcap.models import RedcapConnection, RedcapMapping, RedcapSyncState, SyncStatus
from server.redcap.schemas import MappingIn
from server.submissions import store
from server.submissions.models import Submission, SubmissionStatus
from server.submissions.service import checksum
from tests import factories, services
from tests import ingest_factories as ingest
from tests.bench import sync_load, sync_profile
from tests.conftest import create_database, drop_database
from tests.redcap_standin import ProjectModel, Repeating, StandinProcess, field
from tests.redcap_standin.demo import demo_tokens
from workers.publisher import CeleryPublisher

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("srt", "crt", "cpt")
METRICS = ("n_trials", "mean_rt_ms", "accuracy")
INSTRUMENT = "cognitive_session"
WORKER_PROCESSES = 2
# Far above what the drain needs: the throttle (still asked before every call) never waits.
BENCH_CALLS_PER_MINUTE = 60_000
SAFE_CALLS_PER_MINUTE: int = RedcapConnection.max_calls_per_minute.default.arg
BATCH_SIZE: int = RedcapConnection.batch_size.default.arg
INSERT_TRANSACTION = 500  # submissions per set-up transaction
ORIGIN = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)  # the first visit
WARM_UP_TASKS = 2 * WORKER_PROCESSES
# What every call costs before REDCap does any work: the network and REDCap's own start of a
# request (PHP, the token's user and rights, the project, its log entry), well over 50 ms on
# the servers studies use. The stand-in answers in about 1 ms, which no REDCap does: at that,
# one call per submission looks 40 times cheaper than it is, and the comparison says nothing.
LATENCY_MS = 50.0
POSTGRES = "PostgreSQL"


# ----- the REDCap project ------------------------------------------------------------------------
def bench_project() -> ProjectModel:
    """Enrolment plus a repeating `cognitive_session`: the session's and each module's fields."""
    metadata = [
        field("record_id", "enrollment", "Record ID"),
        field("enrol_date", "enrollment", "Enrolment date", validation="date_ymd"),
        field("session_date", INSTRUMENT, "Session date", validation="date_ymd"),
        field("session_started_at", INSTRUMENT, "Session start", validation="datetime_ymd"),
        field("visit", INSTRUMENT, "Visit"),
    ]
    for module in MODULES:
        metadata += [
            field(f"{module}_n_trials", INSTRUMENT, f"{module} trials", validation="integer",
                  minimum="1", annotation="@FORCE-MINMAX"),
            field(f"{module}_mean_rt_ms", INSTRUMENT, f"{module} mean RT (ms)",
                  validation="number"),
            field(f"{module}_accuracy", INSTRUMENT, f"{module} accuracy", validation="number",
                  minimum="0", maximum="1", annotation="@FORCE-MINMAX"),
        ]  # fmt: skip
    return ProjectModel(
        project_title="Metricis sync benchmark",
        project_id=301,
        metadata=metadata,
        tokens=demo_tokens(),
        repeating=[Repeating(INSTRUMENT)],
    )


def mapping(module_keys: dict[str, str]) -> MappingIn:
    """Session date, start and visit, and 3 metrics of each module (short name -> module key)."""
    fields = [
        {"source": "session.date", "field": "session_date"},
        {"source": "session.started_at", "field": "session_started_at"},
        {"source": "session.visit", "field": "visit"},
    ]
    for short, key in module_keys.items():
        fields += [{"source": f"module.{key}.{m}", "field": f"{short}_{m}"} for m in METRICS]
    return MappingIn.model_validate(
        {"record_id_field": "record_id", "repeating_instrument": INSTRUMENT, "fields": fields}
    )


class Standin(StandinProcess):
    """The stand-in process, its records in memory: with --state it rewrites its state file,
    every record in it, after each import, which no REDCap does."""

    def start(self, timeout: float = 10.0) -> Standin:
        super().start(timeout)
        return self

    def command(self) -> list[str]:
        command = super().command()
        at = command.index("--state")
        return command[:at] + command[at + 2 :]

    def imports(self) -> list[dict[str, Any]]:
        calls = self.control("state")["calls"]
        return [c for c in calls if c["content"] == "record" and c["action"] == "import"]

    def instances(self) -> dict[tuple[str, int], dict[str, Any]]:
        """(record, repeat instance) -> the stored row, for the repeating instrument."""
        return {
            (row["record_id"], int(row["redcap_repeat_instance"])): row
            for row in self.control("state")["records"]
            if row.get("redcap_repeat_instrument") == INSTRUMENT
        }


# ----- the database ------------------------------------------------------------------------------
@dataclass
class World:
    study_id: uuid.UUID
    connection_id: uuid.UUID
    submission_ids: list[uuid.UUID]  # in received order
    rows: dict[uuid.UUID, dict[str, Any]]  # each one's REDCap row, instances in received order
    warm_up_events: list[uuid.UUID]  # sync rows of a study with no REDCap connection
    seed_seconds: float
    insert_seconds: float


Task = tuple[uuid.UUID, str, int, dict[str, Any], list[dict[str, Any]]]


def visit_tasks(modules: list[tuple[uuid.UUID, str]], p: int, v: int) -> list[Task]:
    """The modules of participant p's visit v: trials as a phone records them, and summaries
    that agree with them."""
    tasks = []
    for m, (module_id, key) in enumerate(modules):
        trials = ingest.trials(20 + (p + v + m) % 7, start_rt=250.0 + (p % 13) * 5 + m * 40)
        tasks.append((module_id, key, 1, ingest.summary_of(trials), trials))
    return tasks


def new_submission(
    study_id: uuid.UUID,
    participant_id: uuid.UUID,
    session_id: uuid.UUID,
    tasks: list[Task],
    received_at: datetime,
    topics: tuple[str, ...],
) -> store.NewSubmission:
    """What POST /api/submit hands to store.insert_once for this visit."""
    csid = f"visit-{uuid.uuid4().hex}"
    body = {
        "client_submission_id": csid,
        "session_id": str(session_id),
        "tasks": [
            {"module_key": key, "module_version": version, "summary": summary, "trials": trials}
            for _id, key, version, summary, trials in tasks
        ],
        "client_submitted_at": received_at.isoformat(),
    }
    submission_id = uuid.uuid4()
    return store.NewSubmission(
        id=submission_id,
        client_submission_id=csid,
        participant_id=participant_id,
        study_id=study_id,
        session_id=session_id,
        checksum=checksum(body),
        raw_payload=orjson.dumps(body),
        received_at=received_at,
        status=SubmissionStatus.accepted,
        problems=None,
        tasks=tasks,
        events=[
            outbox.Event(t, {"submission_id": str(submission_id)}, submission_id) for t in topics
        ],
    )


async def seed(
    engine: AsyncEngine,
    settings: Settings,
    standin: Standin,
    participants: int,
    visits: int,
    topics: tuple[str, ...],
) -> World:
    started = time.monotonic()
    sessionmaker = create_sessionmaker(engine)
    suffix = uuid.uuid4().hex[:6]
    zones = ("Europe/Berlin", "America/New_York", "UTC", "Asia/Tokyo")
    devices = ("Pixel 8", "iPhone 15", "Galaxy S23")
    async with sessionmaker() as db, db.begin():
        modules = [await ingest.create_module(db, f"bench_{m}_{suffix}") for m in MODULES]
        module_rows = [(m.id, m.key) for m in modules]
        # Warm-up: a study without a REDCap connection, its syncs skipped (see warm_up).
        other = await factories.create_study(db, code=f"WARM{suffix}")
        other_person = await factories.create_participant(
            db, await factories.create_site(db, other)
        )
        other_battery = await ingest.create_battery(db, other, modules)
        warm_up = []
        for n in range(WARM_UP_TASKS):
            session = await ingest.start_session(db, other_person, other_battery)
            new = new_submission(
                other.id, other_person.id, session.id, visit_tasks(module_rows, 0, n),
                ORIGIN, (outbox.REDCAP_SYNC_SUBMISSION,),
            )  # fmt: skip
            assert await store.insert_once(db, new)
            warm_up.append(new.id)

        study = await factories.create_study(db, code=f"SYNC{suffix}")
        site = await factories.create_site(db, study)
        battery = await ingest.create_battery(db, study, modules)
        people: list[dict[str, Any]] = [
            {
                "id": uuid.uuid4(),
                "study_id": study.id,
                "site_id": site.id,
                "participant_code": f"P-{p + 1:04d}",
                "timezone": zones[p % len(zones)],
            }
            for p in range(participants)
        ]
        await db.execute(insert(Participant), people)
        # Written directly: the API would refuse http:// in production and more than 600/min.
        connection = RedcapConnection(
            study_id=study.id,
            api_url=standin.url,
            token_encrypted=token_box(settings).encrypt(standin.token),
            token_last4=standin.token[-4:],
            max_calls_per_minute=BENCH_CALLS_PER_MINUTE,
            batch_size=BATCH_SIZE,
        )
        db.add(connection)
        await db.flush()
    study_id, connection_id = study.id, connection.id
    # Saved as the API saves it: checked against the project's metadata, over its API, with no
    # transaction open during the call (save_mapping ends its reads first), then committed.
    async with sessionmaker() as db:
        saved_on = await db.get_one(RedcapConnection, connection_id)
        await redcap_service.save_mapping(
            db,
            settings,
            connection=saved_on,
            mapping_in=mapping({short: m.key for short, m in zip(MODULES, modules, strict=True)}),
        )
        await db.commit()
    warm_up_events = await _scalars(
        engine, select(OutboxEvent.id).where(OutboxEvent.subject_id.in_(warm_up))
    )

    # A session and a submission per visit: visit v of every participant, then visit v + 1.
    plan = [
        (p, v, person["id"], uuid.uuid4(), ORIGIN + timedelta(days=7 * v, minutes=p))
        for v in range(visits)
        for p, person in enumerate(people)
    ]
    async with sessionmaker() as db, db.begin():
        await db.execute(
            insert(AssessmentSession),
            [
                {
                    "id": session_id,
                    "participant_id": participant_id,
                    "study_id": study_id,
                    "battery_id": battery.id,
                    "status": SessionStatus.completed,
                    "device": {"model": devices[p % len(devices)]},
                    "app_version": "2.3.1",
                    "client_started_at": started_at,
                    "client_ended_at": started_at + timedelta(minutes=12),
                }
                for p, _v, participant_id, session_id, started_at in plan
            ],
        )
    seed_seconds = time.monotonic() - started

    # The submissions as the API stores them: store.insert_once (one statement: the row, its
    # tasks, its outbox rows), INSERT_TRANSACTION to a transaction, two writers at a time.
    started = time.monotonic()
    received = datetime.now(UTC) - timedelta(hours=1)
    news = [
        new_submission(
            study_id,
            participant_id,
            session_id,
            visit_tasks(module_rows, p, v),
            received + timedelta(milliseconds=n),
            topics,
        )
        for n, (p, v, participant_id, session_id, _at) in enumerate(plan)
    ]

    async def write(chunks: list[list[store.NewSubmission]]) -> None:
        for chunk in chunks:
            async with sessionmaker() as db, db.begin():
                for new in chunk:
                    assert await store.insert_once(db, new)

    chunks = [news[i : i + INSERT_TRANSACTION] for i in range(0, len(news), INSERT_TRANSACTION)]
    await asyncio.gather(write(chunks[0::2]), write(chunks[1::2]))
    insert_seconds = time.monotonic() - started
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("ANALYZE"))

    # Each submission's row as the sync's own builder makes it, instances in received order.
    submission_ids = [new.id for new in news]
    async with sessionmaker() as db:
        row = await db.get(RedcapMapping, connection_id)
        assert row is not None
        facts = await records.load_facts(db, submission_ids)
    counter: Counter[str] = Counter()
    rows: dict[uuid.UUID, dict[str, Any]] = {}
    for submission_id in submission_ids:
        fact = facts[submission_id]
        counter[fact.participant_code] += 1
        values = records.field_values(row.document, fact)
        rows[submission_id] = records.build_row(
            row.document, fact, values, counter[fact.participant_code]
        )
    return World(
        study_id, connection_id, submission_ids, rows, warm_up_events, seed_seconds, insert_seconds
    )


async def _scalars(engine: AsyncEngine, query: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list(await conn.scalars(query))


# ----- processes ---------------------------------------------------------------------------------
def process_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "ENVIRONMENT": "production",
        "DATABASE_URL": settings.DATABASE_URL,
        "REDIS_URL": settings.REDIS_URL,
        "JWT_SECRET_KEY": settings.JWT_SECRET_KEY.get_secret_value(),
        "REDCAP_TOKEN_KEY": settings.REDCAP_TOKEN_KEY.get_secret_value(),
        "REDCAP_ALLOWED_HOSTS": ",".join(settings.REDCAP_ALLOWED_HOSTS),
        "LOG_LEVEL": "INFO",
    }


def spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    """SIGTERM to its process group (a worker's pool processes too), SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for_log(proc: subprocess.Popen[bytes], log: Path, needle: bytes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in log.read_bytes():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{log.name}: no {needle!r} after {timeout:g} s:\n{log.read_text()[-3000:]}")


async def warm_up(engine: AsyncEngine, settings: Settings, events: list[uuid.UUID]) -> None:
    """Every worker process's first task imports the REDCap code and opens its database pool
    (a second or so): done before the clock starts, as in a worker that has been running.
    Published here, not by the relay: their sync states end up skipped, not synced."""
    publisher = CeleryPublisher.from_settings(settings)
    try:
        for event_id in events:
            await publisher.publish([(outbox.REDCAP_SYNC_SUBMISSION, event_id)])
    finally:
        await asyncio.to_thread(publisher.close)
    deadline = time.monotonic() + 60
    query = select(func.count()).where(
        OutboxEvent.id.in_(events), OutboxEvent.finished_at.is_not(None)
    )
    while (await _scalars(engine, query))[0] < len(events):
        if time.monotonic() > deadline:
            raise RuntimeError("the workers did not run the warm-up tasks")
        await asyncio.sleep(0.05)


# ----- the drain ---------------------------------------------------------------------------------
@dataclass
class Drain:
    seconds: float  # the relay's first publish to the last synced_at
    wall_seconds: float  # the relay started to every state synced, as the poller saw it
    synced: int
    failed: int
    tasks_done: int
    tasks_done_seconds: float | None  # the first publish to the last sync row completed
    published: int  # sync rows the relay published (the others were completed first)
    jobs_run: int  # sync tasks that ran past their first step (the rest found it done)
    retried: int  # sync tasks run more than once
    dead_letters: int
    cpu: dict[str, float]  # CPU seconds per process group while the backlog drained
    profile: str | None


async def backends(engine: AsyncEngine) -> dict[int, int]:
    """This database's backends: pid -> the client's port."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT pid, client_port FROM pg_stat_activity "
                "WHERE datname = current_database() AND client_port IS NOT NULL"
            )
        )
        return {int(pid): int(port) for pid, port in rows}


async def sync_counts(conn: AsyncConnection, connection_id: uuid.UUID) -> tuple[int, int]:
    """(synced, failed) states: an index-only count, cheap enough to ask 5 times a second."""
    rows = await conn.execute(
        select(RedcapSyncState.status, func.count())
        .where(
            RedcapSyncState.connection_id == connection_id,
            RedcapSyncState.status.in_([SyncStatus.synced, SyncStatus.failed]),
        )
        .group_by(RedcapSyncState.status)
    )
    counts = {status: int(n) for status, n in rows}
    await conn.rollback()  # a fresh snapshot for the next look
    return counts.get(SyncStatus.synced, 0), counts.get(SyncStatus.failed, 0)


async def drain(
    engine: AsyncEngine,
    world: World,
    relay_started: float,
    meter: sync_profile.CpuMeter,
    clients: dict[str, list[int]],
    recording: sync_profile.Recording | None,
    deadline_s: float,
    settle_s: float,
) -> Drain:
    expected = len(world.submission_ids)
    synced = failed = 0
    async with engine.connect() as conn:
        while time.monotonic() - relay_started < deadline_s:
            synced, failed = await sync_counts(conn, world.connection_id)
            if synced + failed >= expected:
                break
            await asyncio.sleep(0.2)
        wall = time.monotonic() - relay_started
        # The database's work, by the process it did it for.
        by_client = sync_profile.owners(await backends(engine), clients)
        cpu = meter.stop(
            {f"PostgreSQL for {name}": pids for name, pids in by_client.items()},
            drop=(POSTGRES,),
        )
    profile = recording.stop() if recording is not None else None

    ours = select(Submission.id).where(Submission.study_id == world.study_id)
    sync_rows = (
        OutboxEvent.topic == outbox.REDCAP_SYNC_SUBMISSION,
        OutboxEvent.subject_id.in_(ours),
    )
    settle_until = time.monotonic() + settle_s
    done_query = select(func.count()).where(*sync_rows, OutboxEvent.finished_at.is_not(None))
    done = (await _scalars(engine, done_query))[0]
    while done < expected and time.monotonic() < settle_until:
        await asyncio.sleep(0.5)
        done = (await _scalars(engine, done_query))[0]
    async with engine.connect() as conn:
        first_publish = await conn.scalar(
            select(func.min(OutboxEvent.published_at)).where(OutboxEvent.subject_id.in_(ours))
        )
        last_synced = await conn.scalar(
            select(func.max(RedcapSyncState.synced_at)).where(
                RedcapSyncState.connection_id == world.connection_id
            )
        )
        last_done = await conn.scalar(select(func.max(OutboxEvent.finished_at)).where(*sync_rows))
        published = await conn.scalar(
            select(func.count()).where(*sync_rows, OutboxEvent.published_at.is_not(None))
        )
        jobs = (
            await conn.execute(
                select(
                    func.count().filter(OutboxEvent.attempts > 0),
                    func.count().filter(OutboxEvent.attempts > 1),
                ).where(*sync_rows)
            )
        ).one()
        dead = await conn.scalar(
            select(func.count()).where(*sync_rows, OutboxEvent.status == JobStatus.failed)
        )
    if first_publish is None or last_synced is None:
        seconds = float("nan")
    else:
        seconds = (last_synced - first_publish).total_seconds()
    return Drain(
        seconds=seconds,
        wall_seconds=wall,
        synced=synced,
        failed=failed,
        tasks_done=done,
        tasks_done_seconds=(last_done - first_publish).total_seconds()
        if done >= expected and last_done and first_publish
        else None,
        published=int(published or 0),
        jobs_run=int(jobs[0]),
        retried=int(jobs[1]),
        dead_letters=int(dead or 0),
        cpu=cpu,
        profile=profile,
    )


async def verify(engine: AsyncEngine, world: World, standin: Standin) -> list[str]:
    """Every submission in REDCap once, as its own row, none missing: what is wrong, if any."""
    problems: list[str] = []
    stored = standin.instances()
    async with create_sessionmaker(engine)() as db:
        states = {
            s.submission_id: s
            for s in await db.scalars(
                select(RedcapSyncState).where(RedcapSyncState.connection_id == world.connection_id)
            )
        }
    placed = Counter((s.record_id, s.instance) for s in states.values())
    twice = [key for key, n in placed.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} instances given to two submissions or more: {twice[:3]}")
    if len(stored) != len(world.submission_ids):
        problems.append(
            f"the stand-in holds {len(stored)} instances, not {len(world.submission_ids)}"
        )
    missing = wrong = unordered = 0
    for submission_id in world.submission_ids:
        state = states.get(submission_id)
        found = stored.get((str(state.record_id), int(state.instance or 0))) if state else None
        if state is None or state.status != SyncStatus.synced or found is None:
            missing += 1
            continue
        expected = world.rows[submission_id]
        unordered += state.instance != expected["redcap_repeat_instance"]
        expected = {**expected, "redcap_repeat_instance": state.instance}
        if any(str(found.get(k)) != str(v) for k, v in expected.items()):
            wrong += 1
    if missing:
        problems.append(f"{missing} submissions are not in REDCap")
    if wrong:
        problems.append(f"{wrong} submissions are stored with values not their own")
    if unordered:
        problems.append(f"{unordered} repeat instances not numbered in the order received")
    return problems


# ----- main --------------------------------------------------------------------------------------
def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--participants", type=int, default=200)
    parser.add_argument("--visits", type=int, default=50, help="submissions per participant")
    parser.add_argument("--sample", type=int, default=500, help="submissions sent one per call")
    parser.add_argument(
        "--redcap-rows-only",
        action="store_true",
        help="write only the REDCap sync outbox row of each submission (the API writes an "
        "archive row too, which the relay then publishes during the drain)",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=LATENCY_MS,
        help="the stand-in waits this long before it answers any call, in all three "
        "measurements (a REDCap across a network, with its per-request overhead); "
        f"default {LATENCY_MS:g}, 0 for the stand-in as it is",
    )
    parser.add_argument("--deadline", type=float, default=180.0, help="seconds for the drain")
    parser.add_argument(
        "--settle", type=float, default=60.0, help="seconds to wait for the last sync tasks"
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs and the database")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the relay, worker and stand-in (slower)"
    )
    args = parser.parse_args()
    total = args.participants * args.visits
    topics: tuple[str, ...] = (outbox.REDCAP_SYNC_SUBMISSION,)
    if not args.redcap_rows_only:
        topics = (outbox.ARCHIVE_SUBMISSION, outbox.REDCAP_SYNC_SUBMISSION)

    name = f"metricis_bench_sync_{uuid.uuid4().hex[:6]}"
    workdir = Path(tempfile.mkdtemp(prefix="metricis-bench-sync-"))
    procs: dict[str, subprocess.Popen[bytes] | None] = {"relay": None, "worker": None}
    standins: list[Standin] = []

    def new_standin(label: str) -> Standin:
        standin = Standin(bench_project(), workdir / f"standin-{label}").start()
        standins.append(standin)
        if args.latency_ms:
            standin.control("configure", delay_seconds=args.latency_ms / 1000)
        return standin

    url = asyncio.run(create_database(name))
    try:
        with services.own_redis() as (redis, redis_port):
            settings = Settings(
                ENVIRONMENT="production",
                DATABASE_URL=url,
                REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
                JWT_SECRET_KEY=secrets.token_urlsafe(48),
                REDCAP_TOKEN_KEY=Fernet.generate_key().decode(),
                LOG_LEVEL="WARNING",
                # The stand-in listens on loopback over http: allowed, as a deployment with
                # REDCap inside its network would list it.
                REDCAP_ALLOWED_HOSTS=["127.0.0.1"],
            )
            migrate(settings)
            standin = new_standin("sync")

            async def set_up() -> World:
                engine = create_engine(settings)
                try:
                    return await seed(
                        engine, settings, standin, args.participants, args.visits, topics
                    )
                finally:
                    await engine.dispose()

            world = asyncio.run(set_up())
            example = world.rows[world.submission_ids[0]]
            row_bytes = sum(len(orjson.dumps(r)) for r in world.rows.values()) / total
            print(
                f"redcap sync benchmark: {total} acknowledged submissions "
                f"({args.participants} participants x {args.visits} visits, {len(MODULES)} "
                f"modules each); each is one REDCap row of {len(example)} fields "
                f"({row_bytes:.0f} bytes of JSON) in the repeating instrument {INSTRUMENT}"
            )
            rows_written = " + ".join(t.split(".")[0] for t in topics)
            print(
                f"  set-up: submissions written by the API's own statement (store.insert_once: "
                f"row, tasks, outbox rows: {rows_written}), {INSERT_TRANSACTION} per "
                f"transaction, in {world.insert_seconds:.1f} s; not {total} HTTP calls, which "
                f"would measure ingest (make bench-ingest)"
            )
            print(
                f"  connection: batch_size {BATCH_SIZE}; max_calls_per_minute "
                f"{BENCH_CALLS_PER_MINUTE}, so the throttle (asked before every call all the "
                f"same) never waits: a real REDCap wants the default, {SAFE_CALLS_PER_MINUTE} a "
                f"minute (the API accepts 600 at most)"
            )
            latency = (
                f"; it answers every call {args.latency_ms:g} ms late (--latency-ms)"
                if args.latency_ms
                else ""
            )
            print(
                "  REDCap: the stand-in (python -m tests.redcap_standin: one process, records "
                f"in memory), a fresh one for each of the three measurements{latency}"
            )

            # The stand-in's ceiling and the plain way first, with nothing else running.
            ordered = [world.rows[i] for i in world.submission_ids]
            other = new_standin("ceiling")
            # One sender, as the sync has per project: the rate a polite client can reach.
            ceiling = sync_load.run(other.url, other.token, ordered, BATCH_SIZE, 1)
            ceiling_stored = len(other.instances())
            other.stop()
            other = new_standin("per-call")
            sample = ordered[: args.sample]
            per_call = sync_load.run(other.url, other.token, sample, 1, WORKER_PROCESSES)
            per_call_stored = len(other.instances())
            other.stop()

            env = process_env(settings)
            worker_log, relay_log = workdir / "worker.log", workdir / "relay.log"
            procs["worker"] = worker = spawn(
                [
                    sys.executable, "-m", "celery", "-A", "workers.app", "worker",
                    "-Q", "redcap", "--pool=prefork", "-c", str(WORKER_PROCESSES),
                    "-n", f"bench-redcap-{uuid.uuid4().hex[:6]}@%h",
                    "--without-gossip", "--without-mingle", "--loglevel=INFO",
                ],
                env,
                worker_log,
            )  # fmt: skip
            wait_for_log(worker, worker_log, b"ready", 60)
            pool = sync_profile.children(worker.pid)

            async def measure() -> tuple[Drain, list[str]]:
                engine = create_engine(settings.model_copy(update={"DATABASE_POOL_SIZE": 2}))
                try:
                    await warm_up(engine, settings, world.warm_up_events)
                    postgres = list(await backends(engine))
                    relay_started = time.monotonic()
                    relay = procs["relay"] = spawn(
                        [sys.executable, "-m", "server", "relay"], env, relay_log
                    )
                    while b"relay_started" not in relay_log.read_bytes():
                        if relay.poll() is not None or time.monotonic() - relay_started > 30:
                            raise RuntimeError(f"the relay did not start: see {relay_log}")
                        await asyncio.sleep(0.01)
                    # From here the relay publishes and the workers work.
                    clients = {
                        **{f"worker process {n}": [p] for n, p in enumerate(pool, 1)},
                        "worker parent (Celery's consumer)": [worker.pid],
                        "relay": [relay.pid],
                        "this benchmark (its polling)": [os.getpid()],
                    }
                    meter = sync_profile.CpuMeter(
                        {
                            **clients,
                            "stand-in": [standin.pid or 0],
                            "redis": [redis.pid],
                            POSTGRES: postgres,
                        }
                    ).start()
                    recording = None
                    if args.profile:
                        recording = sync_profile.Recording.start(
                            {"relay": relay.pid, "worker": worker.pid,
                             "stand-in": standin.pid or 0},
                            workdir,
                        )  # fmt: skip
                    result = await drain(
                        engine,
                        world,
                        relay_started,
                        meter,
                        clients,
                        recording,
                        args.deadline,
                        args.settle,
                    )
                    return result, await verify(engine, world, standin)
                finally:
                    await engine.dispose()

            result, problems = asyncio.run(measure())
            stop(procs["relay"])
            stop(procs["worker"])
            sync_calls = standin.imports()

        records_per_s = rate(result.synced, result.seconds)
        per_call_per_s = per_call.rows_per_second
        ceiling_per_s = ceiling.rows_per_second
        print(
            f"ceiling: pre-built batches of {BATCH_SIZE} rows, PyCap import_records from one "
            f"sender, back to back: {ceiling.rows} rows in "
            f"{ceiling.seconds:.2f} s = {ceiling_per_s:.0f} rows/s"
            + ("" if ceiling_stored == ceiling.rows else f" (BUT {ceiling_stored} stored)")
        )
        print(
            f"per call: one import_records([row]) per submission, {per_call.rows} of them from "
            f"{WORKER_PROCESSES} processes: {per_call.seconds:.2f} s = {per_call_per_s:.0f} "
            f"submissions/s ({1000 * WORKER_PROCESSES / per_call_per_s:.1f} ms a call)"
            + ("" if per_call_stored == per_call.rows else f" (BUT {per_call_stored} stored)")
        )
        ok = [c for c in sync_calls if c["status"] == 200]
        rows_sent = sum(c["rows"] for c in ok)
        print(
            f"sync: python -m server relay + celery worker -Q redcap -c {WORKER_PROCESSES} "
            f"(prefork, warmed up): {result.synced}/{total} synced in {result.seconds:.2f} s "
            f"(the relay's first publish to the last synced_at; {result.wall_seconds:.1f} s "
            f"from starting the relay) = {records_per_s:.0f} submissions/s, one REDCap row each"
        )
        print(
            f"  REDCap import calls: {len(sync_calls)} ({len(sync_calls) - len(ok)} failed), "
            f"{rows_sent} rows, {rate(rows_sent, len(ok)):.1f} rows a call on average"
        )
        finished = (
            f"the last {result.tasks_done_seconds:.1f} s after the first publish"
            if result.tasks_done_seconds is not None
            else f"not all within {args.settle:g} s more"
        )
        print(
            f"  sync outbox rows: {result.tasks_done}/{total} completed, {finished}; "
            f"{result.published} published (the rest completed by the batch that sent their "
            f"submission first); tasks that ran: {result.jobs_run}, more than once: "
            f"{result.retried}; dead letters: {result.dead_letters}; failed states: "
            f"{result.failed}"
        )
        cpu = dict(result.cpu)
        cores = os.cpu_count() or 1
        window = cpu.pop("machine, capacity") / cores
        busy = cpu.pop("machine, all processes")
        cpu["anything else on this machine"] = max(0.0, busy - sum(cpu.values()))
        print(
            f"  CPU while the backlog drained ({window:.1f} s on {cores} cores, busy "
            f"{100 * busy / (window * cores):.0f}% of the time):"
        )
        for group, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]):
            print(f"    {group:<46} {seconds:5.1f} s  {100 * seconds / window:4.0f}% of a core")
        if problems:
            print("  VERIFY FAILED: " + "; ".join(problems))
        else:
            print(
                f"  verified: the stand-in holds exactly {total} instances of {INSTRUMENT}, "
                "each submission's own row, none twice, none missing, numbered in the order "
                "received"
            )
        if result.profile is not None:
            print("profile of the drain (py-spy, 200 Hz; it slows the figures above):")
            print(result.profile)
        if args.keep or args.profile:
            print(f"  kept: {workdir}" + (f", database {name}" if args.keep else ""))
        print(
            f"redcap-sync: records_per_s={records_per_s:.0f} per_call_per_s={per_call_per_s:.0f} "
            f"ceiling_per_s={ceiling_per_s:.0f} speedup={records_per_s / per_call_per_s:.1f} "
            f"ceiling_ratio={records_per_s / ceiling_per_s:.2f}"
        )
        return 1 if problems or result.synced < total else 0
    finally:
        for proc in procs.values():
            stop(proc)
        for one in standins:
            one.kill()
        if not args.keep:
            asyncio.run(drop_database(name))
        if not (args.keep or args.profile):
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    multiprocessing.set_start_method("spawn")
    sys.exit(main())
