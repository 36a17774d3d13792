"""Two workers, two REDCap connections: each project gets its submissions in the order they
were received, and never from two senders at once (server.redcap.sync's advisory lock).

Real processes (tests.e2e): two prefork workers share both connections' tasks; the first
stand-in takes a second over every import, so a second sender, if there were one, would
overlap it (the test fails so with the lock taken out).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import (
    Stack,
    all_done,
    all_synced,
    dead_letters,
    open_stack,
    record_imports,
    session_rows,
    set_up_study,
    submit,
)
from tests.redcap_standin import StandinProcess, classic_project

pytestmark = pytest.mark.slow

PER_STUDY = 6


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with open_stack(tmp_path) as stack:
        yield stack


def overlapping(calls: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """Pairs of calls to one project whose times overlap."""
    spans = sorted((c["started_at"], c["finished_at"]) for c in calls)
    return [(a, b) for (_, a), (b, _) in itertools.pairwise(spans) if b < a]


async def test_two_workers_two_connections_in_order_one_sender_each(
    stack: Stack, tmp_path: Path
) -> None:
    other = StandinProcess(classic_project(), tmp_path / "standin-2")
    await asyncio.to_thread(other.start)
    try:
        standins = [stack.standin, other]
        # The first project slow, the second quick: the worker done with the second's work
        # takes the first's next task while the other is still sending to it.
        for standin, delay in zip(standins, (1.0, 0.0), strict=True):
            standin.control("configure", delay_seconds=delay)
        stack.start_relay()
        await stack.start_worker("one")
        await stack.start_worker("two")
        async with stack.api() as http:
            worlds = [await set_up_study(stack, http, standin=s) for s in standins]
            sent: list[list[Any]] = [[], []]
            for n in range(PER_STUDY):
                for index, world in enumerate(worlds):
                    sent[index].append(await submit(http, world, n_trials=10 + n))
        every = sent[0] + sent[1]
        await stack.wait_for(lambda: all_synced(stack, every), timeout=60, what="all synced")
        await stack.wait_for(lambda: all_done(stack, every), timeout=30, what="all done")

        for standin, world in zip(standins, worlds, strict=True):
            state = standin.control("state")
            rows = session_rows(state, world.participant_code)
            # In the order received: instance n holds the n-th visit, each once.
            assert [(int(r["redcap_repeat_instance"]), r["srt_n_trials"]) for r in rows] == [
                (n + 1, str(10 + n)) for n in range(PER_STUDY)
            ]
            calls = [c for c in state["calls"] if c["content"] == "record"]
            assert calls and overlapping(calls) == []
            assert sum(c["rows"] for c in record_imports(state)) >= PER_STUDY
        assert await dead_letters(stack) == []
    finally:
        other.kill()
