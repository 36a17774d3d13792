"""The import contracts of pyproject.toml ([tool.importlinter]) hold: no package imports one
above it, no import cycles, no test code in production. `make lint` runs the same check
(lint-imports); here it runs with the suite, so CI (`make test`) checks it too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# lint-imports itself, run from the repository root: it reads pyproject.toml there.
LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports())"


def test_the_import_contracts_hold() -> None:
    run = subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"lint-imports failed:\n{run.stdout}\n{run.stderr}"
    assert " 0 broken" in run.stdout, run.stdout
