"""Audit trail benchmark: what the audit write adds to a request, and how many entries a
second the chain takes.

    make bench-audit        (python -m tests.bench.audit)

A fresh PostgreSQL database on TEST_DATABASE_URL's server, migrated; the app in-process
(httpx's ASGI transport, rate limits off, logs at WARNING). Two staff routes are timed in
three modes, in turn round by round so that the machine's other load falls on all alike:
with the audit entry; with none (server.audit.service.record swapped for a no-op); and, as a
control, with a plain one-row UPDATE of another table in its place:

- PATCH /api/participants/{id} (a status change: the request commits a write in every mode,
  so the entry costs its statement only);
- GET /api/participants/{id}/contact (a read of contact details: with no entry the request
  writes nothing, so any write, the entry or the control, makes its commit wait for the WAL
  flush; the control tells that cost from the entry's own).

record() itself is timed inside those requests. Then entries a second: committed
transactions of one entry each, by 1 and by 8 concurrent writers on their own connections
(the chain head's row lock serialises them); verify walks the chain after. The last line is
`audit: writes_per_s=W added_ms=A`, W by 8 writers and A the larger of the two routes' added
time. The load average is printed before and after: on a shared machine the WAL flush, and so
the contact read's figure, moves with the other processes' disk writes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit import service as audit
from server.audit.models import AuditAction
from server.cli import migrate
from server.core.config import Settings
from server.core.security import create_access_token
from server.main import create_app
from server.studies.models import StudyRole
from server.user_sessions import service as sessions_service
from tests import factories, services
from tests.conftest import create_database, drop_database

SECRET = "bench-audit-" + "b" * 40


def _settings(url: str) -> Settings:
    return Settings(
        ENVIRONMENT="test",
        DATABASE_URL=url,
        REDIS_URL=f"{services.TEST_REDIS_URL}/0",
        JWT_SECRET_KEY=SECRET,
        LOG_LEVEL="WARNING",
        RATE_LIMIT_ENABLED=False,
    )  # type: ignore[call-arg]


MODES = ("audit", "none", "plain write")


async def _timed(call: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return times


def _stand_ins(record_times: list[float]) -> dict[str, Callable[..., Awaitable[int]]]:
    """What the routes call in place of audit.record in each mode."""
    real = audit.record

    async def timed(db: AsyncSession, **kwargs: Any) -> int:
        started = time.perf_counter()
        seq = await real(db, **kwargs)
        record_times.append(time.perf_counter() - started)
        return seq

    async def nothing(db: AsyncSession, **kwargs: Any) -> int:
        return 0

    async def plain_write(db: AsyncSession, **kwargs: Any) -> int:
        # The control: any one-row write, so the commit flushes the WAL as with an entry.
        await db.execute(text("UPDATE bench_flush SET n = n + 1 WHERE id = 1"))
        return 0

    return {"audit": timed, "none": nothing, "plain write": plain_write}


async def _routes(settings: Settings, rounds: int, per_round: int) -> dict[str, Any]:
    app = create_app(settings)
    async with app.state.sessionmaker() as db, db.begin():
        await db.execute(text("CREATE TABLE bench_flush (id int PRIMARY KEY, n bigint)"))
        await db.execute(text("INSERT INTO bench_flush VALUES (1, 0)"))
        study = await factories.create_study(db)
        site = await factories.create_site(db, study)
        user = await factories.create_user(db)
        await factories.add_member(db, study, user, StudyRole.coordinator)
        participant = await factories.create_participant(
            db, site, email="bench@example.org", phone="+44 20 7946 0000"
        )
        session, _ = await sessions_service.open_session(
            db, settings, user_id=user.id, user_agent="bench"
        )
    token, _ = create_access_token(settings, subject=user.id, session_id=session.id)
    headers = {"Authorization": f"Bearer {token}"}
    statuses = iter(["active", "enrolled"] * (rounds * per_round * 4 + 1000))

    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://bench") as http:

        async def patch() -> None:
            response = await http.patch(
                f"/api/participants/{participant.id}",
                json={"status": next(statuses)},
                headers=headers,
            )
            assert response.status_code == 200, response.text

        async def read_contact() -> None:
            response = await http.get(
                f"/api/participants/{participant.id}/contact", headers=headers
            )
            assert response.status_code == 200, response.text

        calls = {"PATCH participant (status)": patch, "GET contact": read_contact}
        # Per round, route and mode, the median request: modes are compared round by round,
        # so that a burst of the machine's other load falls on one round, not on one mode.
        medians: dict[tuple[str, str], list[float]] = {(r, m): [] for r in calls for m in MODES}
        record_times: list[float] = []
        stand_ins = _stand_ins(record_times)
        real_record = audit.record
        for call in calls.values():
            await _timed(call, 200)  # warm-up: connections, prepared statements
        for n in range(rounds):
            for mode in MODES[n % 3 :] + MODES[: n % 3]:
                audit.record = stand_ins[mode]  # type: ignore[assignment]
                for name, call in calls.items():
                    medians[(name, mode)].append(statistics.median(await _timed(call, per_round)))
        audit.record = real_record  # type: ignore[assignment]
    await app.state.engine.dispose()
    await app.state.redis.aclose()

    def added(name: str, mode: str) -> float:
        pairs = zip(medians[(name, mode)], medians[(name, "none")], strict=True)
        return 1000 * statistics.median(a - b for a, b in pairs)

    return {
        "record_ms": 1000 * statistics.median(record_times),
        "routes": {
            name: {
                "none_ms": 1000 * statistics.median(medians[(name, "none")]),
                "audit_ms": 1000 * statistics.median(medians[(name, "audit")]),
                "added_ms": added(name, "audit"),
                "plain_write_added_ms": added(name, "plain write"),
            }
            for name in calls
        },
    }


async def _writes(settings: Settings, writers: int, seconds: float) -> float:
    """Committed one-entry transactions a second, by this many concurrent writers."""
    app = create_app(settings)
    sessionmaker = app.state.sessionmaker
    deadline = time.perf_counter() + seconds
    done = 0

    async def writer() -> None:
        nonlocal done
        actor = uuid.uuid4()
        while time.perf_counter() < deadline:
            async with sessionmaker() as db, db.begin():
                await audit.record(
                    db,
                    action=AuditAction.contact_read,
                    actor_id=actor,
                    object_type="participant",
                    object_id=uuid.uuid4(),
                    summary={"fields": ["email", "phone"]},
                )
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    elapsed = time.perf_counter() - started
    async with sessionmaker() as db, db.begin():
        await db.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        verdict = await audit.verify(db)
    assert verdict.ok, verdict.describe()
    await app.state.engine.dispose()
    await app.state.redis.aclose()
    return done / elapsed


async def main(args: argparse.Namespace) -> None:
    name = f"metricis_bench_audit_{uuid.uuid4().hex[:8]}"
    url = await create_database(name)
    try:
        settings = _settings(url)
        await asyncio.to_thread(migrate, settings)
        print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        measured = await _routes(settings, args.rounds, args.per_round)
        print(
            f"requests: {args.rounds} rounds of {args.per_round} per mode, modes in turn; "
            "medians of the rounds' medians; added = median of the rounds' differences"
        )
        for route, f in measured["routes"].items():
            print(
                f"  {route:<27} no entry {f['none_ms']:.3f} ms, with entry {f['audit_ms']:.3f} "
                f"ms: added {f['added_ms']:.3f} ms (any one-row write instead: "
                f"{f['plain_write_added_ms']:.3f} ms)"
            )
        print(f"  record() itself, inside those requests: {measured['record_ms']:.3f} ms median")
        serial = await _writes(settings, 1, args.seconds)
        concurrent = await _writes(settings, 8, args.seconds)
        print(f"entries committed: {serial:.0f}/s by 1 writer, {concurrent:.0f}/s by 8 writers")
        print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        added_ms = max(f["added_ms"] for f in measured["routes"].values())
        print(f"audit: writes_per_s={concurrent:.0f} added_ms={added_ms:.3f}")
    finally:
        await drop_database(name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    asyncio.run(main(parser.parse_args()))
