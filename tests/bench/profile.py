"""Where the time goes: py-spy samples of the server processes under load, summed by frame."""

from __future__ import annotations

import collections
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Frames worth naming, matched on "function (file" as py-spy writes them: the name and its
# opening parenthesis, so that a name inside another ("log" in "..._login_check") does not.
BUCKETS = [
    ("read body", "read_body ("),
    ("json parse (orjson)", "parse_json ("),
    ("pydantic model validation", "parse_model ("),
    ("module checks (JSON Schema, trial order)", "check_task ("),
    ("checksum (canonical JSON + sha256)", "checksum ("),
    ("participant token (JWT)", "read_participant_token ("),
    ("INSERT login check/submission/tasks/outbox", "insert_once_if_live ("),
    ("pool checkout/return", "statement_connection ("),
    ("asyncpg protocol", "(asyncpg/"),
    ("access log", "BoundLogger.info ("),
]


def raw_samples(raw: Path) -> Iterator[tuple[str, int]]:
    """(stack, samples) of each line of a py-spy `--format raw` file."""
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            yield stack, int(count)


def profile_under_load(pid: int, load: Callable[[], Any], workdir: Path) -> str:
    raw = workdir / "profile.txt"
    recorder = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--rate",
            "250",
            "--duration",
            "8",
            "--format",
            "raw",
            "--output",
            str(raw),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    thread = threading.Thread(target=load)
    thread.start()
    recorder.wait()
    thread.join()
    if not raw.exists():
        return "  (py-spy produced no profile: is ptrace allowed here?)"
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for stack, samples in raw_samples(raw):
        total += samples
        for label, needle in BUCKETS:
            if needle in stack:
                inclusive[label] += samples
        if "select" in stack.split(";")[-1] or "_run_once" in stack.split(";")[-1]:
            inclusive["idle (event loop waiting)"] += samples
    lines = [
        f"  {label:<38} {100 * n / total:5.1f}% of samples" for label, n in inclusive.most_common()
    ]
    return "\n".join(
        [
            f"  {total} samples (inclusive: a frame counts in every bucket it is in; a worker"
            " waiting for a core that PostgreSQL holds still samples the frame it stopped in)",
            *lines,
            f"  raw stacks: {raw}",
        ]
    )
