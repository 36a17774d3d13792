"""One of the concurrent audit writers of tests/test_audit_concurrent.py, run as its own process.

`python -m tests.audit_writer DATABASE_URL COUNT GO_FILE`: connects, prints "ready", waits for
GO_FILE to exist (so that both writers start together), then records COUNT entries, each in a
transaction of its own.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from server.audit import service as audit
from server.audit.models import AuditAction


async def main(url: str, count: int, go_file: Path) -> None:
    engine = create_async_engine(url, pool_size=1)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    actor = uuid.uuid4()
    async with engine.connect():
        pass
    print("ready", flush=True)
    while not go_file.exists():
        await asyncio.sleep(0.005)
    for n in range(count):
        async with sessions() as db, db.begin():
            await audit.record(
                db,
                action=AuditAction.contact_read,
                actor_id=actor,
                object_type="participant",
                object_id=uuid.uuid4(),
                summary={"n": n},
            )
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])))
