"""Report benchmark: participant reports of 12 visits each, built by 2 worker processes.

    make bench-report        (python -m tests.bench.report [--participants 200 --visits 12])

A fresh PostgreSQL database on TEST_DATABASE_URL's server, migrated; a study with the
built-in modules (simple RT, CPT, mood questionnaire), a published protocol of V visits two
weeks apart, and N participants on it, each visit completed by a session in its window (so a
report's visits are the schedule's, as a real participant's are), every session scored
(task_scores as the scorer writes them) and one in four with a fired quality flag. Each
participant's report is asked for as POST /api/reports does (server.reports.service.request:
one read, the key, the report row and its reports.build outbox job). Then 2 processes run the
jobs the way a Celery worker on the reports queue does (workers.protocol.process with
workers.tasks.reports' handler: claim the row, build the PDF, store it, mark the row
succeeded; each its own transactions), taking job ids from one queue. Each process first
builds one report of its own, not counted (a worker's first task pays for imports and the
process-wide style sheet). Per build: the time process() takes. Throughput: reports over the
wall time from the first build started to the last finished.

Last line: `report: p50_ms=P p95_ms=Q reports_per_s=R`. Load average printed before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, text

from server.assessment_sessions.models import AssessmentSession
from server.cli import migrate
from server.core.config import Settings
from server.core.db import create_engine, create_sessionmaker
from server.modules.builtin import load_builtins
from server.outbox.models import OutboxEvent
from server.participants.models import Participant
from server.reports import service as reports
from server.reports.models import ReportKind
from server.reports.schemas import ReportCreate
from server.schedules.models import VisitOccurrence
from server.scoring.models import QualityCheck, TaskScore
from server.studies.models import Site, Study
from server.submissions.models import Submission
from tests import ingest_factories as ingest
from tests import schedule_factories, services
from tests.conftest import create_database, drop_database

SECRET = "bench-report-" + "r" * 40
WORKERS = 2


def _settings(url: str) -> Settings:
    return Settings(
        ENVIRONMENT="test",
        DATABASE_URL=url,
        REDIS_URL=f"{services.TEST_REDIS_URL}/0",
        JWT_SECRET_KEY=SECRET,
        LOG_LEVEL="WARNING",
    )  # type: ignore[call-arg]


def _scores(rng: random.Random, visit: int) -> dict[str, dict[str, Any]]:
    mean = 280 + visit * 6 + rng.gauss(0, 15)
    total = max(0, min(27, int(14 - visit * 0.8 + rng.gauss(0, 2))))
    return {
        "simple_rt": {
            "n_trials": 20,
            "n_valid": 20,
            "mean_rt_ms": mean,
            "median_rt_ms": mean - 4,
            "sd_rt_ms": 30 + rng.random() * 10,
            "n_lapses": rng.randrange(3),
        },
        "cpt": {
            "n_trials": 40,
            "hits": 18,
            "misses": 2,
            "false_alarms": 2,
            "correct_rejections": 18,
            "hit_rate": 0.9,
            "false_alarm_rate": 0.1,
            "d_prime": 2.5 + rng.gauss(0, 0.3),
            "mean_hit_rt_ms": 360 + rng.gauss(0, 20),
        },
        "mood9": {"total_score": total, "n_items_answered": 9},
    }


async def seed(settings: Settings, participants: int, visits: int) -> list[uuid.UUID]:
    """The study and its data; each participant's report asked for. The jobs' ids."""
    engine = create_engine(settings)
    maker = create_sessionmaker(engine)
    rng = random.Random(17)
    async with maker() as db, db.begin():
        study = Study(code="BENCH", name="Report bench")
        db.add(study)
        await db.flush()
        sites = [Site(study_id=study.id, code=c, name=f"Site {c}") for c in ("LON", "NYC")]
        db.add_all(sites)
        builtins = await load_builtins(db)
        modules = {k: builtins[k] for k in ("simple_rt", "cpt", "mood9")}
        battery = await ingest.create_battery(db, study, list(modules.values()))
        people = [
            Participant(study_id=study.id, site_id=sites[i % 2].id, participant_code=f"B-{i:04d}")
            for i in range(participants)
        ]
        db.add_all(people)
        await db.flush()
        start = datetime(2026, 1, 5, 9, tzinfo=UTC)
        protocol, plan = await schedule_factories.create_protocol(
            db,
            study,
            battery,
            visits=[
                {"key": f"v{v}", "label": "Baseline" if v == 0 else f"Week {2 * v}"}
                | {"offset_days": 14 * v}
                for v in range(visits)
            ],
        )
        sessions, subs, scores, checks, occurrences = [], [], [], [], []
        for p in people:
            for v in range(visits):
                sid, sub = uuid.uuid4(), uuid.uuid4()
                opens = start + timedelta(days=14 * v)
                when = opens + timedelta(minutes=rng.randrange(600))
                occurrences.append(
                    {
                        "participant_id": p.id,
                        "study_id": study.id,
                        "site_id": p.site_id,
                        "protocol_id": protocol.id,
                        "visit_id": plan[v].id,
                        "occurrence": 0,
                        "window_start": opens,
                        "window_end": opens + timedelta(hours=12),
                        "status": "completed",
                        "completed_at": when + timedelta(minutes=13),
                        "session_id": sid,
                    }
                )
                sessions.append(
                    {
                        "id": sid,
                        "participant_id": p.id,
                        "study_id": study.id,
                        "battery_id": battery.id,
                        "status": "completed",
                        "client_started_at": when,
                        "started_at": when,
                        "ended_at": when + timedelta(minutes=13),
                    }
                )
                subs.append(
                    {
                        "id": sub,
                        "client_submission_id": f"s-{sub.hex}",
                        "participant_id": p.id,
                        "study_id": study.id,
                        "session_id": sid,
                        "checksum": "0" * 64,
                        "raw_payload": b"{}",
                        "received_at": when,
                    }
                )
                for pos, (key, summary) in enumerate(_scores(rng, v).items()):
                    scores.append(
                        {
                            "id": uuid.uuid4(),
                            "submission_id": sub,
                            "position": pos,
                            "session_id": sid,
                            "module_id": modules[key].id,
                            "module_key": key,
                            "module_version": 1,
                            "scorer_key": key,
                            "scorer_version": "1",
                            "raw_checksum": "0" * 64,
                            "client_summary": summary,
                            "server_summary": summary,
                            "comparison": {},
                            "n_mismatches": 0,
                            "problems": [],
                            "computed_at": when,
                        }
                    )
                checks.append(
                    {
                        "id": uuid.uuid4(),
                        "session_id": sid,
                        "scope": "task",
                        "submission_id": sub,
                        "position": 0,
                        "module_key": "simple_rt",
                        "rule": "omissions",
                        "rule_version": "1",
                        "threshold": {"max_share": 0.2},
                        "observed": 0.1,
                        "fired": rng.random() < 0.25,
                        "detail": {},
                        "computed_at": when,
                    }
                )
        for model, rows in (
            (AssessmentSession, sessions),
            (Submission, subs),
            (TaskScore, scores),
            (QualityCheck, checks),
            (VisitOccurrence, occurrences),
        ):
            for i in range(0, len(rows), 2000):
                await db.execute(insert(model), rows[i : i + 2000])
        for p in people:
            await reports.request(
                db,
                settings,
                study_id=study.id,
                report_in=ReportCreate(kind=ReportKind.participant, subject_id=p.id),
                subject=reports.Subject(p.id, None, [p.site_id]),
                user_id=None,
            )
        job_ids = list(
            await db.scalars(
                select(OutboxEvent.id)
                .where(OutboxEvent.topic == reports.REPORTS_BUILD)
                .order_by(OutboxEvent.created_at)
            )
        )
    await engine.dispose()
    return job_ids


def _worker(url: str, jobs: Any, results: Any, warmup: uuid.UUID) -> None:
    """One worker process: its own loop and engine, as workers.runtime gives a Celery one."""
    from server.core.logging import configure_logging
    from workers import protocol
    from workers.tasks.reports import _build

    settings = _settings(url)
    configure_logging(settings)  # as the worker does (workers.app): WARNING, so quiet

    async def run() -> None:
        engine = create_engine(settings)
        maker = create_sessionmaker(engine)
        await protocol.process(maker, settings, event_id=warmup, task_name="warmup", handler=_build)
        results.put(("ready", 0.0, 0.0, 0.0))
        while (job := jobs.get()) is not None:
            started = time.perf_counter()
            outcome = await protocol.process(
                maker,
                settings,
                event_id=job,
                task_name="workers.tasks.reports.build_report",
                handler=_build,
            )
            ended = time.perf_counter()
            results.put((outcome, ended - started, started, ended))
        await engine.dispose()

    asyncio.run(run())


async def main(args: argparse.Namespace) -> None:
    name = f"metricis_bench_report_{os.getpid()}"
    url = await create_database(name)
    try:
        settings = _settings(url)
        await asyncio.to_thread(migrate, settings)
        n = args.participants
        job_ids = await seed(settings, n + WORKERS, args.visits)
        warmups, measured = job_ids[:WORKERS], job_ids[WORKERS:]
        print(f"seeded: {n} participants x {args.visits} visits (+{WORKERS} warm-up)")
        print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        ctx = mp.get_context("spawn")
        jobs, results = ctx.Queue(), ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(url, jobs, results, w)) for w in warmups]
        for proc in procs:
            proc.start()
        for _ in procs:
            assert results.get()[0] == "ready"
        for job in measured:
            jobs.put(job)
        for _ in procs:
            jobs.put(None)
        got = [results.get() for _ in measured]
        for proc in procs:
            proc.join()
        failed = [g for g in got if g[0] != "succeeded"]
        assert not failed, failed[:3]
        times = sorted(g[1] * 1000 for g in got)
        wall = max(g[3] for g in got) - min(g[2] for g in got)
        engine = create_engine(settings)
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT count(*), avg(size_bytes), avg(pages) FROM reports "
                        "WHERE built_at IS NOT NULL"
                    )
                )
            ).one()
        await engine.dispose()
        print(f"built: {row[0]} reports, {row[1]:.0f} bytes and {row[2]:.1f} pages on average")
        print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        p50 = statistics.median(times)
        p95 = times[int(0.95 * (len(times) - 1))]
        print(f"report: p50_ms={p50:.0f} p95_ms={p95:.0f} reports_per_s={len(times) / wall:.1f}")
    finally:
        await drop_database(name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=200)
    parser.add_argument("--visits", type=int, default=12)
    asyncio.run(main(parser.parse_args()))
