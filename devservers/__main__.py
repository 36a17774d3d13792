"""`python -m devservers run [--var DIR] -- COMMAND...`

Runs COMMAND (make run: migrate, seed, honcho) with DATABASE_URL and REDIS_URL pointing at
embedded PostgreSQL and Redis started here, data in DIR (./var/embedded), when the
environment does not already name servers. When COMMAND ends, or this process is told to
stop (Ctrl-C, SIGTERM, SIGHUP) or its parent dies, COMMAND is stopped first, then the servers.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from devservers import processes
from devservers.stack import embedded


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devservers")
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="run a command with embedded PostgreSQL and Redis")
    run.add_argument("--var", default="var/embedded", help="the servers' data folder")
    run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        parser.error("run needs a command after --")
    return args


def run(folder: Path, command: list[str]) -> int:
    parent = os.getppid()
    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    for sig in processes.TERMINATING:
        signal.signal(sig, on_signal)

    want_pg = not os.environ.get("DATABASE_URL")
    want_redis = not os.environ.get("REDIS_URL")
    with embedded(folder, postgres=want_pg, redis=want_redis) as urls:
        env = dict(os.environ)
        if urls.database_url:
            env["DATABASE_URL"] = urls.database_url
            print(f"[devservers] PostgreSQL {urls.database_url} (data in {folder})", flush=True)
        if urls.redis_url:
            env["REDIS_URL"] = urls.redis_url
            print(f"[devservers] Redis {urls.redis_url} (data in {folder})", flush=True)
        if stopping:
            return 128 + stopping[0]
        # Not in a session of its own: Ctrl-C in the terminal reaches it directly, as it would
        # without us. If we die, the kernel (Linux) tells it with SIGTERM.
        child = subprocess.Popen(  # noqa: S603
            command,
            env=env,
            preexec_fn=processes._die_with_parent(signal.SIGTERM),
        )
        told = False
        while child.poll() is None:
            if (stopping or processes.parent_gone(parent)) and not told:
                child.terminate()
                told = True
            time.sleep(0.1)
        if stopping or told:
            return 0  # stopped as asked (Ctrl-C, SIGTERM, make gone): a clean stop
        return child.returncode if child.returncode >= 0 else 128 - child.returncode


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    return run(Path(args.var), args.command)


if __name__ == "__main__":
    sys.exit(main())
