"""Psychometrics for built-in module rows written before the built-ins declared them.

Version 1 of the built-ins gained each metric's direction, test-retest reliability and normal
range (reports read them for the reliable change index). Rows inserted before that hold the
same metrics without them, so a database that predates it reports no reliable change.
Migration 0021 adds them to such rows: interpretation only, the metric keys, schemas and
scores stay as they are, and a row whose metrics are not exactly the built-in's is left alone.
"""

from __future__ import annotations

import uuid
from typing import Any

from server.modules.builtin_cognitive import COGNITIVE_MODULES
from server.modules.builtin_questionnaires import mood9_module

NORM_KEYS = ("higher_is_better", "reliability", "normal_range")


def _declared() -> dict[tuple[str, int], list[dict[str, Any]]]:
    definitions = [*COGNITIVE_MODULES, mood9_module(uuid.UUID(int=0))]
    return {(d["key"], d["version"]): d["metrics"] for d in definitions}


def backfilled(key: str, version: int, stored: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The stored metrics with the built-in's psychometrics added where missing; None when
    there is nothing to add or the row is not the built-in's (another key set)."""
    declared = _declared().get((key, version))
    if declared is None or [m.get("key") for m in stored] != [m["key"] for m in declared]:
        return None
    out, changed = [], False
    for have, want in zip(stored, declared, strict=True):
        # Absent or null (rows written through the schema carry the fields as null).
        extra = {k: want[k] for k in NORM_KEYS if k in want and have.get(k) is None}
        changed = changed or bool(extra)
        out.append({**have, **extra})
    return out if changed else None
