"""PyCap straight at a REDCap API from N processes: the sync benchmark's yardsticks.

`run(url, token, rows, batch_size, processes)` splits pre-built rows into calls of
`batch_size` rows, deals the calls out to `processes` processes (spawned, each with its own
PyCap Project and keep-alive session, started together once all are ready) that import them one
after the other, as fast as they can. batch_size 1 is the plain way: one call per submission.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from typing import Any


@dataclass(frozen=True)
class Load:
    rows: int
    calls: int
    seconds: float  # first process's start to last process's end

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("nan")


def _importer(
    url: str,
    token: str,
    calls: list[list[dict[str, Any]]],
    ready: Any,
    go: Event,
    results: Any,
) -> None:
    from redcap.project import Project

    project = Project(url, token)
    ready.put(True)
    go.wait()
    started = time.time()
    for rows in calls:
        # As the sync sends them (server.redcap.client.RedcapClient.import_records).
        project.import_records(
            rows, overwrite="normal", return_content="count", return_format_type="json"
        )
    results.put((started, time.time()))


def run(url: str, token: str, rows: list[dict[str, Any]], batch_size: int, processes: int) -> Load:
    context = multiprocessing.get_context("spawn")
    calls = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    workers = [
        context.Process(
            target=_importer, args=(url, token, calls[n::processes], ready, go, results)
        )
        for n in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            ready.get(timeout=60)
        go.set()
        spans = [results.get(timeout=600) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
    seconds = max(end for _, end in spans) - min(start for start, _ in spans)
    return Load(rows=len(rows), calls=len(calls), seconds=seconds)
