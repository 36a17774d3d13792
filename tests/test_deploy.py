"""Deploy runs what the Procfile runs: systemd units and docker-compose.yml, checked here.

The Procfile (`make run`) is the list of processes. Each must have a systemd unit that runs
the same command and that metricis.target starts, and a docker-compose.yml service of the
same name with the same command; neither may run a process the Procfile lacks. Docker is
not run here: the compose file, the units and the Dockerfile are read and compared.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from workers.app import QUEUES

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
TARGET = SYSTEMD / "metricis.target"
INFRASTRUCTURE = {"postgres", "redis", "migrate"}


def procfile() -> dict[str, list[str]]:
    processes: dict[str, list[str]] = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            processes[name.strip()] = shlex.split(command)
    assert processes, "the Procfile lists no process"
    return processes


def signature(argv: list[str]) -> tuple[str, ...]:
    """What a command runs: the program (no path) and its words up to the first option,
    keeping `-m module` and `-A app`: `python -m server serve`, `celery -A workers.app beat`."""
    words = [Path(argv[0]).name]
    rest = iter(argv[1:])
    for word in rest:
        if word in {"-m", "-A"}:
            words += [word, next(rest)]
        elif word.startswith("-"):
            break
        else:
            words.append(word)
    return tuple(words)


def queues(argv: list[str]) -> set[str]:
    """The queues a `celery worker` command consumes (-Q a,b / -Q=a,b / --queues a,b)."""
    found: set[str] = set()
    for i, word in enumerate(argv):
        if word in {"-Q", "--queues"}:
            found |= set(argv[i + 1].split(","))
        elif word.startswith(("-Q=", "--queues=")):
            found |= set(word.partition("=")[2].split(","))
    return found


def unit_setting(path: Path, key: str) -> list[str]:
    """Every value of `key=` in a unit file, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    return [line.partition("=")[2].strip() for line in text.splitlines() if line.startswith(key)]


def systemd_commands() -> dict[str, list[str]]:
    """{unit name started by metricis.target: its ExecStart}, template instances expanded."""
    wanted = " ".join(unit_setting(TARGET, "Wants=")).split()
    commands: dict[str, list[str]] = {}
    for unit in wanted:
        name, at, rest = unit.partition("@")
        instance = rest.removesuffix(".service")
        path = SYSTEMD / (f"{name}@.service" if at else unit)
        assert path.exists(), f"metricis.target wants {unit}, but {path.name} is missing"
        (exec_start,) = unit_setting(path, "ExecStart=")
        commands[unit] = shlex.split(exec_start.replace("%i", instance))
    return commands


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def test_every_procfile_process_runs_under_systemd_with_the_same_command() -> None:
    deployed = {signature(argv) for argv in systemd_commands().values()}
    missing = {name for name, argv in procfile().items() if signature(argv) not in deployed}
    assert missing == set(), f"no systemd unit under metricis.target runs {sorted(missing)}"


def test_systemd_runs_nothing_the_procfile_lacks() -> None:
    known = {signature(argv) for argv in procfile().values()}
    extra = {u for u, argv in systemd_commands().items() if signature(argv) not in known}
    assert extra == set()
    # Every unit file is started by the target, or it would be a unit nobody enables.
    wanted = {u.partition("@")[0].removesuffix(".service") for u in systemd_commands()}
    files = {p.name.partition("@")[0].removesuffix(".service") for p in SYSTEMD.glob("*.service")}
    assert files == wanted


def test_systemd_workers_consume_every_queue_of_the_procfile_worker() -> None:
    worker = procfile()["worker"]
    consumed: set[str] = set()
    for argv in systemd_commands().values():
        if signature(argv) == signature(worker):
            consumed |= queues(argv)
    assert consumed == queues(worker) == set(QUEUES)


def test_compose_runs_the_procfile_processes_with_their_exact_commands() -> None:
    services = compose()["services"]
    assert set(services) - INFRASTRUCTURE == set(procfile())
    for name, argv in procfile().items():
        assert services[name]["command"] == argv, name


def test_compose_migrates_once_before_any_process_starts() -> None:
    services = compose()["services"]
    assert services["migrate"]["command"] == ["python", "-m", "server", "migrate"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    for name in procfile():
        after = services[name]["depends_on"]
        assert after["migrate"] == {"condition": "service_completed_successfully"}, name
        assert after["redis"] == {"condition": "service_healthy"}, name


@pytest.mark.parametrize("name", ["migrate", "web", "worker", "beat", "relay"])
def test_compose_processes_share_one_image_and_the_compose_servers(name: str) -> None:
    service = compose()["services"][name]
    assert service["image"] == "metricis:latest"
    assert service["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
    environment = service["environment"]
    assert environment["DATABASE_URL"].startswith("postgresql+asyncpg://metricis:${")
    assert environment["DATABASE_URL"].endswith("@postgres:5432/metricis")
    assert environment["REDIS_URL"] == "redis://redis:6379/0"
    # Secrets come from the env file, never from the compose file.
    assert service["env_file"] == "deploy/metricis.env"
    assert not {"JWT_SECRET_KEY", "REDCAP_TOKEN_KEY"} & set(environment)


def test_compose_servers_keep_their_data_and_redis_never_drops_a_message() -> None:
    services = compose()["services"]
    postgres, redis = services["postgres"], services["redis"]
    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql") for v in postgres["volumes"])
    assert postgres["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert redis["image"].startswith("redis:")
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert set(compose()["volumes"]) >= {"postgres-data", "redis-data"}


def test_the_image_installs_the_runtime_lock_with_hashes_and_runs_unprivileged() -> None:
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    instructions = [line for line in lines if line and not line.startswith(("#", " "))]
    assert instructions[0] == "FROM python:3.11-slim"
    assert any("--require-hashes -r requirements.txt" in line for line in lines)
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    copied = {line.split()[1].rstrip("/") for line in instructions if line.startswith("COPY ")}
    assert copied >= {"requirements.txt", "alembic.ini", "alembic", "server", "workers"}
    # The build context is an allow-list: no .env, .venv or var/ can reach the image.
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line]
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore
    assert allowed == {"requirements.txt", "alembic.ini", "alembic", "server", "workers"}


def test_the_deploy_readme_names_every_unit() -> None:
    readme = (DEPLOY / "README.md").read_text()
    units = [p.name for p in SYSTEMD.iterdir()]
    assert [u for u in units if f"systemd/{u}" not in readme] == []


def test_beat_keeps_no_schedule_file() -> None:
    # Its schedule is in Redis behind redbeat's lock (workers.app): nothing on disk to keep,
    # and a second beat waits rather than sending from a file of its own.
    beat = signature(procfile()["beat"])
    commands = [
        *systemd_commands().values(),
        *(s["command"] for s in compose()["services"].values() if "command" in s),
    ]
    beats = [argv for argv in commands if signature(argv) == beat]
    assert len(beats) == 2
    for argv in beats:
        assert not [w for w in argv if w.startswith("-s") or w.partition("=")[0] == "--schedule"]
    assert "volumes" not in compose()["services"]["beat"]
