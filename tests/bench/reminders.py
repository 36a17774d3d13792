"""Reminders benchmark: 100,000 participants with schedules, 10,000 reminders due in one tick,
sent by Celery workers to a local SMTP server.

    make bench-reminders     (python -m tests.bench.reminders [--participants N --due D])

Its own database (migrated), Redis and processes (tests.e2e.open_stack), and a real SMTP
server in this process (tests.smtp_sink, aiosmtpd). One study, a protocol of three visits
(weeks 1, 4 and 12) and an email reminder at window open; N participants written with COPY,
each with an encrypted email address and three visit occurrences: D of them have their
week-1 window opening in the last minute, the rest over the next months. The relay and two
Celery worker processes (notifications queue, one process each) start first. Then, timed:
two dispatch ticks of the same minute started together, as two beats or a retried tick would
(server.reminders.dispatch.tick, each to its commit): `tick_ms` is the wall time of the pair.
Then the sending, from the ticks' commit to the last message recorded sent: `send_per_s`.
`duplicates`: emails the SMTP server received beyond one per message, plus message rows
beyond one per (occurrence, rule, channel).

Last line: `reminders: tick_ms=T due=N sent=N duplicates=D send_per_s=R`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from datetime import time as wall_time
from pathlib import Path

from sqlalchemy import text

from server.core.db import driver_connection
from server.participants import contacts
from server.participants.models import ParticipantContact
from server.reminders import dispatch
from server.reminders.models import DispatchWatermark, ReminderRule, Trigger
from tests import factories
from tests import ingest_factories as ingest
from tests import schedule_factories as sched
from tests.e2e.stack import Stack, open_stack
from tests.smtp_sink import SmtpSink

WORKERS = 2
VISITS = [{"key": k, "offset_days": d} for k, d in (("week1", 7), ("week4", 28), ("week12", 84))]


async def _setup(stack: Stack, n: int, due: int, now: datetime) -> None:
    rng = random.Random(15)
    async with stack.sessions() as db, db.begin():
        study = await factories.create_study(db)
        site = await factories.create_site(db, study)
        battery = await ingest.create_battery(db, study, await ingest.standard_modules(db))
        protocol, visits = await sched.create_protocol(db, study, battery, visits=VISITS)
        db.add(ReminderRule(
            study_id=study.id, visit_id=visits[0].id, trigger=Trigger.window_open,
            channels=["email"], quiet_start=wall_time(0, 0), quiet_end=wall_time(0, 0),
        ))  # fmt: skip
        await db.merge(DispatchWatermark(id=1, through=now - timedelta(minutes=1)))
        ids = [uuid.uuid4() for _ in range(n)]
        people = [
            (pid, study.id, site.id, f"B{i:06d}", "enrolled", "Europe/Berlin", "en", now, now, now)
            for i, pid in enumerate(ids)
        ]
        sealed = ParticipantContact()
        contact_rows = []
        for i, pid in enumerate(ids):
            contacts.write(sealed, stack.settings, email=f"b{i}@example.org", phone=None,
                           push=None)  # fmt: skip
            contact_rows.append((pid, sealed.email_enc, False, False, False, now))
        occurrences = []
        for i, pid in enumerate(ids):
            for v, visit in enumerate(visits):
                if v == 0 and i < due:
                    start = now - timedelta(seconds=rng.randrange(1, 59))
                else:
                    start = now + timedelta(minutes=rng.randrange(60, 120 * 1440))
                occurrences.append((
                    uuid.uuid4(), pid, study.id, site.id, protocol.id, visit.id, 0, start,
                    start + timedelta(hours=12), "upcoming", now,
                ))  # fmt: skip
        raw = await driver_connection(db)
        await raw.copy_records_to_table("participants", records=people, columns=(
            "id", "study_id", "site_id", "participant_code", "status", "timezone", "language",
            "enrolled_at", "created_at", "updated_at"))  # fmt: skip
        await raw.copy_records_to_table("participant_contacts", records=contact_rows, columns=(
            "participant_id", "email_enc", "email_opt_out", "sms_opt_out", "push_opt_out",
            "updated_at"))  # fmt: skip
        await raw.copy_records_to_table("visit_occurrences", records=occurrences, columns=(
            "id", "participant_id", "study_id", "site_id", "protocol_id", "visit_id",
            "occurrence", "window_start", "window_end", "status", "updated_at"))  # fmt: skip
    async with stack.engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        raw = (await autocommit.get_raw_connection()).driver_connection
        await raw.execute("VACUUM ANALYZE participants, participant_contacts, visit_occurrences")
    print(f"set up: {n} participants, {len(occurrences)} visit occurrences, {due} due now")


async def _tick(stack: Stack, now: datetime) -> dispatch.TickResult:
    async with stack.sessions() as db:
        result = await dispatch.tick(db, now=now)
        await db.commit()
    return result


async def _count(stack: Stack, sql: str) -> int:
    async with stack.sessions() as db:
        return int(await db.scalar(text(sql)) or 0)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, SmtpSink() as smtp:
        async with open_stack(Path(tmp)) as stack:
            now = datetime.now(UTC)
            print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
            await _setup(stack, args.participants, args.due, now)
            # INFO: start_worker waits for the worker's " ready." line.
            env = {"EMAIL_PROVIDER": "smtp", "SMTP_HOST": smtp.host, "SMTP_PORT": smtp.port}
            stack.start_relay(LOG_LEVEL="WARNING")
            for w in range(WORKERS):
                await stack.start_worker(f"bench{w}", **env)
            now = datetime.now(UTC)
            started = time.perf_counter()
            first, second = await asyncio.gather(_tick(stack, now), _tick(stack, now))
            tick_ms = (time.perf_counter() - started) * 1000
            ticked = time.perf_counter()
            print(f"ticks: {first.found} found, {first.queued} queued, {first.skipped} skipped; "
                  f"the other tick of the minute found {second.found}")  # fmt: skip
            due = first.queued + second.queued
            sent_sql = "SELECT count(*) FROM reminder_messages WHERE status = 'sent'"
            sent, last_print = 0, time.perf_counter()
            while sent < due:
                await asyncio.sleep(0.5)
                sent = await _count(stack, sent_sql)
                if time.perf_counter() - last_print > 10:
                    print(f"  {sent} sent after {time.perf_counter() - ticked:.0f} s")
                    last_print = time.perf_counter()
                if time.perf_counter() - ticked > args.timeout:
                    print("timed out waiting for the sends\n" + stack.diagnostics())
                    break
            elapsed = time.perf_counter() - ticked
            smtp.wait_for(sent, timeout=30)
            ids = Counter(str(m["Message-ID"]) for m in smtp.messages)
            rows = await _count(stack, "SELECT count(*) FROM reminder_messages")
            keys = await _count(stack, "SELECT count(DISTINCT (occurrence_id, rule_id, channel)) "
                                       "FROM reminder_messages")  # fmt: skip
            duplicates = sum(c - 1 for c in ids.values()) + rows - keys
            print(f"SMTP server received {len(smtp.messages)} emails, {len(ids)} distinct")
            print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
            print(f"reminders: tick_ms={tick_ms:.0f} due={due} sent={sent} "
                  f"duplicates={duplicates} send_per_s={sent / elapsed:.0f}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=10_000)
    parser.add_argument("--timeout", type=float, default=900)
    asyncio.run(main(parser.parse_args()))
