"""Run the stand-in as a child process, so a test can kill -9 it and start it again."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

from .project import ProjectModel
from .server import API_PATH, CONTROL_PATH, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests.redcap_standin"


class StandinProcess:
    """`python -m tests.redcap_standin` with the project and state files kept in `workdir`."""

    def __init__(
        self,
        project: ProjectModel,
        workdir: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.project = project
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.project_file = self.workdir / "project.json"
        self.state_file = self.workdir / "state.json"
        self.log_file = self.workdir / "standin.log"
        project.to_json_file(self.project_file)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{API_PATH}"

    @property
    def token(self) -> str:
        return self.project.import_token

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", MODULE,
            "--host", self.host,
            "--port", str(self.port),
            "--project", str(self.project_file),
            "--state", str(self.state_file),
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> StandinProcess:
        if self.proc is not None and self.proc.poll() is None:
            return self
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(), cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=log
            )
        assert self.proc.stdout is not None
        self._wait_ready(self.proc.stdout, timeout)
        return self

    def _wait_ready(self, stdout: IO[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if selector.select(timeout=0.05):
                    line = stdout.readline().decode()
                    if line.startswith("READY "):
                        stdout.close()
                        return
                    if not line:
                        break
                elif self.proc is not None and self.proc.poll() is not None:
                    break
        self.kill()
        log = self.log_file.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"REDCap stand-in did not start on port {self.port}:\n{log}")

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, like a crash."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not go within 5 s."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
            self.proc = None

    def restart(self) -> StandinProcess:
        self.kill()
        return self.start()

    def control(self, op: str = "state", **options: Any) -> dict[str, Any]:
        """POST /__control__: op is state | configure | clear_failure | reset."""
        request = urllib.request.Request(
            f"http://{self.host}:{self.port}{CONTROL_PATH}",
            data=json.dumps({"op": op, **options}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    def __enter__(self) -> StandinProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
