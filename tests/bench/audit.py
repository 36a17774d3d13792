"""Audit trail benchmark: what the audit write adds to a request, and how many entries a
second the chain takes.

    make bench-audit        (python -m tests.bench.audit)

A fresh PostgreSQL database on TEST_DATABASE_URL's server, migrated; the app in-process
(httpx's ASGI transport, rate limits off, logs at WARNING). Two staff routes are timed with
the audit write and without it (server.audit.service.record swapped for a no-op), in
alternating rounds so that the machine's other load falls on both alike:

- PATCH /api/participants/{id} (a status change: the request commits a write either way,
  so the entry costs its statement only);
- GET /api/participants/{id}/contact (a read of contact details: without the entry the
  request writes nothing, so with it the commit also waits for the WAL flush).

Then entries a second: committed transactions of one entry each, by 1 and by 8 concurrent
writers on their own connections (the chain head's row lock serialises them); verify walks
the chain after. The last line is `audit: writes_per_s=W added_ms=A`, W by 8 writers and A the
larger of the two routes' added median.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from httpx import ASGITransport, AsyncClient

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


async def _noop(*args: Any, **kwargs: Any) -> int:
    return 0


async def _timed(call: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return times


async def _routes(settings: Settings, rounds: int, per_round: int) -> dict[str, dict[str, float]]:
    app = create_app(settings)
    async with app.state.sessionmaker() as db, db.begin():
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
        times: dict[tuple[str, bool], list[float]] = {(r, w): [] for r in calls for w in (1, 0)}
        real_record = audit.record
        for call in calls.values():
            await _timed(call, 200)  # warm-up: connections, prepared statements
        for n in range(rounds):
            for with_audit in (True, False) if n % 2 == 0 else (False, True):
                audit.record = real_record if with_audit else _noop  # type: ignore[assignment]
                for name, call in calls.items():
                    times[(name, with_audit)] += await _timed(call, per_round)
        audit.record = real_record  # type: ignore[assignment]
    await app.state.engine.dispose()
    await app.state.redis.aclose()
    return {
        name: {
            "with_ms": 1000 * statistics.median(times[(name, True)]),
            "without_ms": 1000 * statistics.median(times[(name, False)]),
            "n": len(times[(name, True)]),
        }
        for name in calls
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
        routes = await _routes(settings, args.rounds, args.per_round)
        print(f"requests, median of {args.rounds} alternating rounds of {args.per_round}:")
        for route, figures in routes.items():
            added = figures["with_ms"] - figures["without_ms"]
            print(
                f"  {route:<28} with audit {figures['with_ms']:.3f} ms, without "
                f"{figures['without_ms']:.3f} ms, added {added:.3f} ms (n={figures['n']:.0f})"
            )
        serial = await _writes(settings, 1, args.seconds)
        concurrent = await _writes(settings, 8, args.seconds)
        print(f"entries committed: {serial:.0f}/s by 1 writer, {concurrent:.0f}/s by 8 writers")
        added_ms = max(f["with_ms"] - f["without_ms"] for f in routes.values())
        print(f"audit: writes_per_s={concurrent:.0f} added_ms={added_ms:.3f}")
    finally:
        await drop_database(name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    asyncio.run(main(parser.parse_args()))
