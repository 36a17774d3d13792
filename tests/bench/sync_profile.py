"""Where the sync benchmark's time goes: py-spy on the relay, the worker and the stand-in.

`Recording.start(pids, workdir)` samples each process (and its children) until `stop()`, which
returns a summary per process: the share of samples in which each of our own functions
(server/, workers/, tests/redcap_standin/) or a library hot spot is on the stack.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench.profile import raw_samples

OURS = re.compile(r"^(\w+) \(((?:server|workers|tests/redcap_standin)/[\w/]+\.py)(?::\d+)?\)$")
# Library frames worth naming on their own (function, file fragment).
LIBRARIES = [
    ("sqlalchemy ORM flush", "flush", "sqlalchemy/orm/session.py"),
    ("sqlalchemy compile", "compile", "sqlalchemy/sql/"),
    ("asyncpg protocol", "", "asyncpg/"),
    ("kombu/redis publish", "publish", "kombu/"),
    ("requests (HTTP client)", "send", "requests/sessions.py"),
    ("json encode", "dumps", "json/__init__.py"),
    ("json decode", "loads", "json/__init__.py"),
    ("structlog / logging", "", "structlog/"),
    ("event loop idle (select)", "select", "selectors.py"),
    ("celery worker loop", "", "celery/worker/"),
]


@dataclass
class Recording:
    raw: dict[str, Path] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @classmethod
    def start(cls, pids: dict[str, int], workdir: Path) -> Recording:
        recording = cls()
        py_spy = str(Path(sys.executable).with_name("py-spy"))
        for name, pid in pids.items():
            out = workdir / f"profile-{name}.txt"
            recording.raw[name] = out
            recording.procs[name] = subprocess.Popen(
                [py_spy, "record", "--pid", str(pid), "--subprocesses", "--rate", "200",
                 "--format", "raw", "--output", str(out), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        time.sleep(0.5)  # py-spy attaches
        return recording

    def stop(self, top: int = 14) -> str:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        return "\n".join(summarize(name, raw, top) for name, raw in self.raw.items())


def summarize(name: str, raw: Path, top: int) -> str:
    if not raw.exists():
        return f"  {name}: py-spy produced no profile (is ptrace allowed here?)"
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for stack, samples in raw_samples(raw):
        total += samples
        seen: set[str] = set()
        for frame in stack.split(";"):
            match = OURS.match(frame.strip())
            if match:
                seen.add(f"{match.group(1)} ({match.group(2)})")
            for label, function, fragment in LIBRARIES:
                if fragment in frame and (not function or frame.startswith(function + " ")):
                    seen.add(label)
        for label in seen:
            inclusive[label] += samples
    if not total:
        return f"  {name}: no samples"
    lines = [f"  {name}: {total} samples (inclusive: a frame counts in every stack it is in)"]
    lines += [f"    {100 * n / total:5.1f}%  {label}" for label, n in inclusive.most_common(top)]
    return "\n".join(lines)


# ----- CPU time per process, from /proc ---------------------------------------------------------
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (its own, not its children's), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / TICKS, sum(values) / TICKS


@dataclass
class CpuMeter:
    """CPU seconds each named group of processes spends between start() and stop()."""

    groups: dict[str, list[int]]
    before: dict[int, float] = field(default_factory=dict)
    machine_before: tuple[float, float] = (0.0, 0.0)

    def start(self) -> CpuMeter:
        self.before = {pid: cpu_seconds(pid) for pids in self.groups.values() for pid in pids}
        self.machine_before = machine_busy_seconds()
        return self

    def stop(
        self, extra: dict[str, list[int]] | None = None, drop: tuple[str, ...] = ()
    ) -> dict[str, float]:
        """Seconds per group. `extra`: groups as they are now (processes that started after
        start() count from their start); `drop`: groups only measured to start from."""
        groups = {k: v for k, v in {**self.groups, **(extra or {})}.items() if k not in drop}
        used = {
            name: sum(max(0.0, cpu_seconds(pid) - self.before.get(pid, 0.0)) for pid in pids)
            for name, pids in groups.items()
        }
        busy, total = machine_busy_seconds()
        used["machine, all processes"] = busy - self.machine_before[0]
        used["machine, capacity"] = total - self.machine_before[1]
        return used


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def _port_inodes() -> dict[int, str]:
    """Local TCP port -> socket inode, for every TCP socket on the machine."""
    found: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            found[int(fields[1].rsplit(":", 1)[1], 16)] = fields[9]
    return found


def owners(clients: dict[int, int], processes: dict[str, list[int]]) -> dict[str, list[int]]:
    """Database backends grouped by the process at the other end of their connection.

    clients: backend pid -> client port (pg_stat_activity); processes: name -> pids.
    """
    by_inode = {
        inode: name for name, pids in processes.items() for pid in pids
        for inode in _socket_inodes(pid)
    }  # fmt: skip
    ports = _port_inodes()
    grouped: dict[str, list[int]] = {}
    for backend, port in clients.items():
        name = by_inode.get(ports.get(port, ""), "someone else")
        grouped.setdefault(name, []).append(backend)
    return grouped
