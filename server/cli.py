"""`python -m server <command>`: migrate, create-admin, seed-demo, serve, relay, archive, audit."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from server.core.config import ConfigurationError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def migrate(settings: Settings, revision: str = "head") -> None:
    from alembic.config import Config

    from alembic import command

    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = settings.DATABASE_URL
    command.upgrade(config, revision)
    print(f"database migrated to {revision}")


async def _create_admin(settings: Settings, email: str, password: str) -> None:
    from server.core.db import create_engine, create_sessionmaker
    from server.users import service as users_service
    from server.users.schemas import UserCreate

    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as db, db.begin():
            user = await users_service.create(
                db, settings, user_in=UserCreate(email=email, password=password, is_admin=True)
            )
            print(f"admin created: {user.email} ({user.id})")
    finally:
        await engine.dispose()


async def _archive_rebuild(settings: Settings, study_ref: str) -> int:
    import uuid

    from sqlalchemy import select

    from server.archive.rebuild import SCOPE, rebuild_study
    from server.archive.storage import storage_from_settings
    from server.core.db import create_engine, create_sessionmaker
    from server.core.errors import NotFound
    from server.studies.models import Study

    try:
        storage = storage_from_settings(settings)
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        study_id: uuid.UUID | None = uuid.UUID(study_ref)
    except ValueError:
        study_id = None
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as db, db.begin():
            condition = Study.id == study_id if study_id is not None else Study.code == study_ref
            study = await db.scalar(select(Study).where(condition))
            if study is None:
                raise NotFound(f"No study {study_ref!r}.")
            report = await rebuild_study(db, storage, study)
    finally:
        await engine.dispose()
    print(report.summary())
    for name, count in report.counts().items():
        print(f"  {name}: {count}")
    for kind, items in (
        ("corrupt", report.corrupt),
        ("missing reference", report.missing_reference),
        ("conflicting", report.conflicting),
    ):
        for item in items:
            print(f"  {kind}: {item.key}: {item.reason}")
    if report.missing_reference:
        print(f"note: {SCOPE}")
    return 0 if report.ok else 1


async def _audit_verify(settings: Settings) -> int:
    from server.audit import service as audit_service
    from server.core.db import create_engine, create_sessionmaker

    engine = create_engine(settings, pooled=False)
    try:
        async with create_sessionmaker(engine)() as db, db.begin():
            # One snapshot: the head and the entries as of the same moment, writers or not.
            await db.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            verdict = await audit_service.verify(db)
    finally:
        await engine.dispose()
    print(verdict.describe(), file=sys.stdout if verdict.ok else sys.stderr)
    return 0 if verdict.ok else 1


async def _relay(settings: Settings) -> None:
    import signal

    from workers.relay import run_relay

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await run_relay(settings, stop)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("migrate", help="apply Alembic migrations")
    m.add_argument("revision", nargs="?", default="head")
    a = sub.add_parser("create-admin", help="create a system administrator")
    a.add_argument("--email", required=True)
    a.add_argument("--password", required=True)
    d = sub.add_parser("seed-demo", help="a demo study, two sites, staff and 20 participants")
    d.add_argument("--if-empty", action="store_true", help="do nothing if demo data exists")
    s = sub.add_parser("serve", help="run the API with uvicorn")
    s.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    s.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    s.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "1")))
    sub.add_parser("relay", help="publish outbox rows to the workers' queues, until stopped")
    ar = sub.add_parser("archive", help="the submission archive")
    ar_sub = ar.add_subparsers(dest="archive_command", required=True)
    rb = ar_sub.add_parser(
        "rebuild", help="restore a study's sessions and submissions from its archive objects"
    )
    rb.add_argument("--study", required=True, help="study code or id")
    au = sub.add_parser("audit", help="the audit trail")
    au_sub = au.add_subparsers(dest="audit_command", required=True)
    au_sub.add_parser(
        "verify", help="walk the hash chain; exit 1 naming the first broken link, if any"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return 2
    from server.core.errors import AppError
    from server.core.logging import configure_logging

    # The CLI's own output is what it prints; its logs are for warnings and errors only.
    # The relay is a long-running process: its logs are its output.
    if args.command != "relay":
        configure_logging(settings.model_copy(update={"LOG_LEVEL": "WARNING"}))
    else:
        configure_logging(settings)

    try:
        if args.command == "migrate":
            migrate(settings, args.revision)
        elif args.command == "create-admin":
            asyncio.run(_create_admin(settings, args.email, args.password))
        elif args.command == "seed-demo":
            from server.demo import seed_demo

            asyncio.run(seed_demo(settings, if_empty=args.if_empty))
        elif args.command == "serve":
            import uvicorn

            uvicorn.run(
                "server.main:create_app",
                factory=True,
                host=args.host,
                port=args.port,
                workers=args.workers,
                proxy_headers=False,  # X-Forwarded-For is trusted only from TRUSTED_PROXIES
                access_log=False,
            )
        elif args.command == "relay":
            asyncio.run(_relay(settings))
        elif args.command == "archive" and args.archive_command == "rebuild":
            return asyncio.run(_archive_rebuild(settings, args.study))
        elif args.command == "audit" and args.audit_command == "verify":
            return asyncio.run(_audit_verify(settings))
    except AppError as exc:
        print(f"error: {exc.message} {exc.details or ''}".rstrip(), file=sys.stderr)
        return 1
    return 0
