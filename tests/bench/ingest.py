"""Ingest benchmark: POST /api/submit against the production server command, measured in the
same run as a reference endpoint that parses and validates the same payload and writes nothing.

    make bench-ingest        (python -m tests.bench.ingest)

Real PostgreSQL and Redis (TEST_DATABASE_URL / TEST_REDIS_URL), uvicorn with 2 worker processes,
wrk as the load generator, a new idempotency key per request. Submit and reference run in
alternating rounds (see alternating). The last line is the summary the issue asks for.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from server.cli import migrate
from server.core.config import Settings
from server.core.models import utcnow
from server.core.security import create_access_token
from server.participant_auth.models import ParticipantLogin
from tests import factories, services
from tests import ingest_factories as ingest
from tests.bench import profile
from tests.conftest import create_database, drop_database

ROOT = Path(__file__).resolve().parents[2]
LUA = Path(__file__).with_name("ingest.lua")
MODULES = 3
TRIALS_PER_MODULE = 100


def bench_trial(i: int) -> dict[str, Any]:
    """A trial as a phone records it: stimulus, response, timing, device clock."""
    responded = i % 11 != 0
    return {
        "trial_index": i,
        "stimulus": ["left", "right", "up", "down"][i % 4],
        "response": ["left", "right", "up", "down"][(i + (i % 5 == 0)) % 4] if responded else None,
        "stimulus_onset_ms": 1500.0 * i + 250.0,
        "rt_ms": 280.0 + (i * 37) % 240 if responded else None,
        "responded": responded,
        "correct": responded and i % 5 != 0,
        "client_ts": f"2026-11-23T10:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
    }


BENCH_TRIAL_SCHEMA = {
    "type": "object",
    "required": ["trial_index", "rt_ms", "responded", "correct"],
    "additionalProperties": False,
    "properties": {
        "trial_index": {"type": "integer", "minimum": 0},
        "stimulus": {"type": "string", "maxLength": 32},
        "response": {"type": ["string", "null"], "maxLength": 32},
        "stimulus_onset_ms": {"type": "number", "minimum": 0},
        "rt_ms": {"type": ["number", "null"], "minimum": 0},
        "responded": {"type": "boolean"},
        "correct": {"type": "boolean"},
        "client_ts": {"type": "string", "maxLength": 40},
    },
}


def summary(trials: list[dict[str, Any]]) -> dict[str, Any]:
    rts = [t["rt_ms"] for t in trials if t["responded"]]
    return {
        "n_trials": len(trials),
        "mean_rt_ms": sum(rts) / len(rts),
        "accuracy": sum(1 for t in trials if t["correct"]) / len(trials),
    }


async def seed(database_url: str, secret: str) -> tuple[str, bytes]:
    """A study, a participant with a live token, a 3-module battery, a session; the body."""
    engine = create_async_engine(database_url)
    async with async_sessionmaker(engine, expire_on_commit=False)() as db, db.begin():
        study = await factories.create_study(db, code=f"BENCH{uuid.uuid4().hex[:6]}")
        participant = await factories.create_participant(db, await factories.create_site(db, study))
        modules = []
        for name in ("simple_rt", "choice_rt", "cpt"):
            module = await ingest.create_module(db, f"bench_{name}_{uuid.uuid4().hex[:4]}")
            module.trial_schema = BENCH_TRIAL_SCHEMA
            modules.append(module)
        await db.flush()
        session = await ingest.start_session(
            db, participant, await ingest.create_battery(db, study, modules)
        )
        login = ParticipantLogin(
            participant_id=participant.id, expires_at=utcnow() + timedelta(days=1)
        )
        db.add(login)
        await db.flush()
        settings = Settings(
            DATABASE_URL=database_url, REDIS_URL=services.TEST_REDIS_URL, JWT_SECRET_KEY=secret
        )
        token, _ = create_access_token(
            settings,
            subject=participant.id,
            session_id=login.id,
            kind="participant",
            expires_in=timedelta(days=1),
        )
        tasks = []
        for module in modules:
            trials = [bench_trial(i) for i in range(TRIALS_PER_MODULE)]
            tasks.append(
                {
                    "module_key": module.key,
                    "module_version": module.version,
                    "summary": summary(trials),
                    "trials": trials,
                }
            )
        body = orjson.dumps(
            {
                "client_submission_id": "__KEY__",
                "session_id": str(session.id),
                "tasks": tasks,
                "client_submitted_at": datetime.now(UTC).isoformat(),
            }
        )
    await engine.dispose()
    return token, body


def start_server(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    services.wait_for_port(port, timeout=30)
    return proc


def wrk(
    url: str, path: str, body: Path, token: str, connections: int, seconds: int
) -> dict[str, int]:
    out = subprocess.run(
        [
            "wrk",
            "-t",
            "2" if connections > 2 else "1",
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            url,
            "--",
            path,
            str(body),
            token,
            uuid.uuid4().hex[:12],
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(li for li in out.splitlines() if li.startswith("RESULT "))
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def alternating(
    run: Callable[[str, int], dict[str, int]], paths: tuple[str, str], seconds: int, rounds: int = 3
) -> list[dict[str, int]]:
    """Both paths in turns (a b, b a, a b...), `seconds` each in all: on a shared machine the
    load of other processes drifts, and two back-to-back runs would each take a different
    share of it into their ratio. Counts add up; a percentile is the worst round's."""
    results: list[list[dict[str, int]]] = [[], []]
    for n in range(rounds):
        order = (0, 1) if n % 2 == 0 else (1, 0)
        for i in order:
            results[i].append(run(paths[i], max(1, round(seconds / rounds))))
    merged = []
    for runs in results:
        total = {k: sum(r[k] for r in runs) for k in ("requests", "duration_us", "non2xx")}
        total["socket_errors"] = sum(r["socket_errors"] for r in runs)
        for k in ("p50_us", "p95_us", "p99_us"):
            total[k] = max(r[k] for r in runs)
        merged.append(total)
    return merged


def rate(result: dict[str, int]) -> float:
    return result["requests"] / (result["duration_us"] / 1e6)


def report(name: str, result: dict[str, int]) -> str:
    return (
        f"  {name:<10} {rate(result):8.1f} req/s  p50 {result['p50_us'] / 1000:6.2f} ms  "
        f"p95 {result['p95_us'] / 1000:6.2f} ms  p99 {result['p99_us'] / 1000:6.2f} ms  "
        f"non-2xx {result['non2xx']}  socket errors {result['socket_errors']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", "15")))
    parser.add_argument("--profile", action="store_true", help="py-spy the real endpoint")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2

    name = f"metricis_bench_{uuid.uuid4().hex[:6]}"
    url = asyncio.run(create_database(name))
    workdir = Path(tempfile.mkdtemp(prefix="metricis-bench-"))
    secret = secrets.token_urlsafe(48)
    proc = None
    try:
        migrate(Settings(DATABASE_URL=url, REDIS_URL=services.TEST_REDIS_URL))
        token, body = asyncio.run(seed(url, secret))
        body_file = workdir / "submission.json"
        body_file.write_bytes(body)
        port = services.free_port()
        env = {
            **os.environ,
            "ENVIRONMENT": "production",
            "DATABASE_URL": url,
            "REDIS_URL": f"{services.TEST_REDIS_URL}/0",
            "JWT_SECRET_KEY": secret,
            "REDCAP_TOKEN_KEY": Fernet.generate_key().decode(),
            "ENABLE_REFERENCE_ENDPOINT": "true",
            "LOG_LEVEL": "INFO",
        }
        proc = start_server(port, env, workdir / "server.log")
        base = f"http://127.0.0.1:{port}"
        print(
            f"ingest benchmark: {MODULES} modules x {TRIALS_PER_MODULE} trials, "
            f"{len(body)} bytes of JSON per submission; uvicorn --workers 2 "
            f"(python -m server serve), PostgreSQL, Redis; wrk; {args.seconds}s per run"
        )
        real, ref = "/api/submit", "/api/submit/reference"
        for path in (real, ref):  # warm up: pools, compiled schemas, JIT-free but cache-full
            wrk(base, path, body_file, token, 8, 3)

        def at(connections: int) -> Callable[[str, int], dict[str, int]]:
            return lambda path, seconds: wrk(base, path, body_file, token, connections, seconds)

        print(f"throughput, 32 connections (3 alternating rounds, {args.seconds}s per path):")
        t_real, t_ref = alternating(at(32), (real, ref), args.seconds)
        print(report("submit", t_real))
        print(report("reference", t_ref))
        print("latency, 4 connections (3 alternating rounds; percentiles of the worst round):")
        l_real, l_ref = alternating(at(4), (real, ref), args.seconds)
        print(report("submit", l_real))
        print(report("reference", l_ref))
        if any(r["non2xx"] or r["socket_errors"] for r in (t_real, t_ref, l_real, l_ref)):
            print(f"WARNING: some requests failed; see the server log: {workdir / 'server.log'}")
        if args.profile:
            print("profile of POST /api/submit, 32 connections (py-spy, both workers):")
            print(
                profile.profile_under_load(
                    proc.pid, lambda: wrk(base, real, body_file, token, 32, 10), workdir
                )
            )

        ratio = rate(t_real) / rate(t_ref)
        print(
            f"ingest: subs_per_s={rate(t_real):.0f} reference_per_s={rate(t_ref):.0f} "
            f"ratio={ratio:.2f} p99_ms={l_real['p99_us'] / 1000:.1f} "
            f"reference_p99_ms={l_ref['p99_us'] / 1000:.1f}"
        )
        return 0
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.5)
        asyncio.run(drop_database(name))
        if not args.profile:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
