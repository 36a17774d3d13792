"""`make run` on the embedded engines, as a new user runs it: no DATABASE_URL, no REDIS_URL.

The stack serves the demo study; Ctrl-C (SIGINT to the terminal's process group) leaves no
PostgreSQL or Redis process behind; a second run finds the data of the first; a `make run`
killed outright (SIGKILL, nothing of ours runs any more) takes its servers with it too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.demo import DEMO_LOGINS
from tests import services

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _servers_of(folder: Path) -> dict[int, str]:
    """Live processes that run on this folder's data (postgres, valkey, the supervisor): by
    command line, or by working directory (Valkey rewrites its command line, and runs in its
    data folder)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(entry / "cwd")
            state = next(
                line for line in (entry / "status").read_text().splitlines()
                if line.startswith("State:")
            )  # fmt: skip
        except (OSError, StopIteration):
            continue
        if (str(folder) in argv or cwd.startswith(str(folder))) and "Z (zombie)" not in state:
            found[int(entry.name)] = argv
    return found


class MakeRun:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = services.free_port()
        self.log = tmp / f"make-run-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
        env.update(
            PORT=str(self.port),
            EMBEDDED_DIR=str(tmp / "embedded"),
            ARCHIVE_DIR=str(tmp / "archive"),
            SECRETS_DIR=str(tmp / "secrets"),
            WORKER_CONCURRENCY="1",
            ENVIRONMENT="development",
        )
        with self.log.open("wb") as out:
            # A session of its own: the test signals the whole group, as a terminal does.
            self.proc = subprocess.Popen(
                ["make", "--no-print-directory", "run"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()[-4000:]
            try:
                if httpx.get(self.url("/api/health/ready"), timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise AssertionError("make run did not get ready:\n" + self.output()[-4000:])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_exit(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout)


@pytest.fixture
def tmp() -> Iterator[Path]:
    # Not under pytest's tmp_path (0700, and re-closed by every pytest run): as root, the
    # embedded PostgreSQL runs as a user of its own, which must reach its data.
    folder = Path(tempfile.mkdtemp(prefix="metricis-make-run-"))
    folder.chmod(0o755)
    yield folder
    for pid in _servers_of(folder):  # a failed test must not leave servers running
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


def _login(run: MakeRun, email: str) -> dict[str, str]:
    password = next(p for e, p, _ in DEMO_LOGINS if e == email)
    login = httpx.post(
        run.url("/api/auth/login"), data={"username": email, "password": password}, timeout=10
    )
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def _study_codes(run: MakeRun) -> list[str]:
    headers = _login(run, DEMO_LOGINS[0][0])  # the admin
    studies = httpx.get(run.url("/api/studies"), headers=headers, timeout=10)
    assert studies.status_code == 200, studies.text
    return [s["code"] for s in studies.json()]


def _participant_codes(run: MakeRun, email: str) -> list[str]:
    headers = _login(run, email)
    (study,) = httpx.get(run.url("/api/studies"), headers=headers, timeout=10).json()
    listed = httpx.get(
        run.url("/api/participants"), params={"study_id": study["id"]}, headers=headers, timeout=10
    )
    assert listed.status_code == 200, listed.text
    return [p["participant_code"] for p in listed.json()["items"]]


def test_make_run_on_embedded_engines_stops_clean_and_keeps_its_data(tmp: Path) -> None:
    first = MakeRun(tmp)
    first.wait_ready()
    assert "PostgreSQL postgresql+asyncpg://" in first.output()
    assert "demo study DEMO created" in first.output()
    assert "DEMO" in _study_codes(first)
    # The demo's site-scoped coordinator sees London's ten participants, the others all twenty.
    london = _participant_codes(first, "london.coordinator@demo.metricis.org")
    assert len(london) == 10 and all(code.startswith("LON-") for code in london), london
    assert len(_participant_codes(first, "coordinator@demo.metricis.org")) == 20
    running = " ".join(_servers_of(tmp).values())
    assert "postgres -D" in running and "valkey-server" in running

    os.killpg(first.proc.pid, signal.SIGINT)  # Ctrl-C
    first.wait_exit()
    assert _servers_of(tmp) == {}

    second = MakeRun(tmp)
    second.wait_ready()
    assert "demo data already present" in second.output()
    assert _study_codes(second).count("DEMO") == 1

    second.proc.kill()  # make itself, killed outright: nothing of ours runs after it
    second.wait_exit()
    deadline = time.monotonic() + 60
    while _servers_of(tmp) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _servers_of(tmp) == {}, second.output()[-3000:]
