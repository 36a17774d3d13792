"""Child server processes that cannot outlive whoever started them.

A server started for `make run` or a test run must stop when that run stops, however it
stops: Ctrl-C, SIGTERM, or SIGKILL of the parent (then nothing of ours runs any more). On
Linux the kernel sends each child a signal when its parent dies (PR_SET_PDEATHSIG); the
supervisor also watches its own parent (`parent_gone`), which covers macOS and a killed
`make`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> Callable[[], None] | None:
    """A preexec function asking the kernel for `sig` when our parent dies (Linux only).

    It runs in the child after subprocess has switched user (the kernel clears the setting on
    a change of credentials, so it must come after), just before exec."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return preexec


def spawn(
    argv: Sequence[str],
    *,
    log: Path,
    on_parent_death: int,
    user: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in a session of its own (Ctrl-C in the terminal reaches the supervisor,
    which stops servers after the processes that use them), output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(  # noqa: S603 - argv is ours, never a shell
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
            env=env,
            preexec_fn=_die_with_parent(on_parent_death),
        )


def stop(proc: subprocess.Popen[bytes], sig: int, timeout: float = 30.0) -> None:
    """`sig` (each server's fast, clean shutdown), then SIGKILL if it has not exited."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path,
               timeout: float = 60.0) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not become ready in {timeout:.0f} s:\n{tail(log)}")
        time.sleep(0.05)


def tail(log: Path, chars: int = 2000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def parent_gone(original_ppid: int) -> bool:
    """Our parent (make, a shell, pytest) has died: we were handed to init or a subreaper."""
    return os.getppid() != original_ppid


TERMINATING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
