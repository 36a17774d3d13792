"""python -m tests.redcap_standin --port N --project project.json [--state state.json]

Prints one line ``READY {"url": ..., "token": ...}`` once it listens, then serves until
SIGTERM / SIGINT. With --state the stored records survive kill -9 and restart.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from types import FrameType

from .demo import classic_project, longitudinal_project
from .project import ProjectModel
from .server import RedcapStandin


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.redcap_standin")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--project", help="project JSON file (ProjectModel.to_json_file)")
    source.add_argument("--demo", choices=["classic", "longitudinal"])
    parser.add_argument("--state", help="records file: loaded on start, rewritten on change")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.project:
        project = ProjectModel.from_json_file(args.project)
    else:
        project = classic_project() if args.demo == "classic" else longitudinal_project()
    standin = RedcapStandin(project, host=args.host, port=args.port, state_file=args.state)
    standin.start()
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print("READY " + json.dumps({"url": standin.url, "token": standin.token}), flush=True)
    done.wait()
    standin.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
