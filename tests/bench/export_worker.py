"""One export built as a worker process builds it, for tests.bench.export: this module imports
what the worker imports (workers.app's task modules) and the build, nothing of the tests, so
its peak RSS (VmHWM, printed as JSON with the wall time) is the worker's: the peak while
it builds the export, and the imports' own peak beside it.

    python -m tests.bench.export_worker DATABASE_URL ARCHIVE_DIR EXPORT_ID
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import time
import uuid
from pathlib import Path

from server.archive.storage import LocalStorage
from server.core.config import Settings
from server.core.db import create_engine, create_sessionmaker
from server.exports import build
from workers.app import TASK_MODULES


async def main(url: str, archive: str, export_id: str) -> None:
    # What a Celery worker imports at start: every task module (and so every model).
    for module in TASK_MODULES:
        importlib.import_module(module)
    before = _hwm_mb()
    # The peak so far is the imports'. Reset it (clear_refs 5 resets VmHWM), so the figure is
    # the export's: the most the process held while it built the export (imports included).
    Path("/proc/self/clear_refs").write_text("5")
    settings = Settings(
        ENVIRONMENT="test", DATABASE_URL=url, REDIS_URL="redis://127.0.0.1:6379/0",
        JWT_SECRET_KEY="bench-export-" + "e" * 40,
        LOG_LEVEL="WARNING",
    )  # type: ignore[call-arg]  # fmt: skip
    engine = create_engine(settings)
    started = time.perf_counter()
    await build.build(create_sessionmaker(engine), LocalStorage(Path(archive)),
                      uuid.UUID(export_id))  # fmt: skip
    elapsed = time.perf_counter() - started
    await engine.dispose()
    print(json.dumps({"seconds": elapsed, "peak_mb": _hwm_mb(), "import_peak_mb": before}))


def _hwm_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return (
        int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
        / 1024
    )


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
