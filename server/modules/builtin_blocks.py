"""The building blocks the built-in module definitions are written with.

Property schemas the tasks share, the closed record every trial and summary schema is, and
the entries of a definition's `metrics`: a metric (derived from the trials or not), and a
metric with the psychometrics reports read.
"""

from __future__ import annotations

from typing import Any

DRAFT = "https://json-schema.org/draft/2020-12/schema"

TRIAL_INDEX: dict[str, Any] = {"type": "integer", "minimum": 0}
COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
MS_OR_NULL: dict[str, Any] = {"type": ["number", "null"]}
PROPORTION_OR_NULL: dict[str, Any] = {"type": ["number", "null"], "minimum": 0, "maximum": 1}


def record(properties: dict[str, Any]) -> dict[str, Any]:
    """A closed record: every property required, nothing else allowed."""
    return {
        "$schema": DRAFT,
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def metric(
    key: str,
    unit: str,
    label: str,
    op: str | None = None,
    field: str | None = None,
    where: dict[str, Any] | None = None,
) -> dict[str, Any]:
    derived = None if op is None else {"op": op, "field": field, "where": where}
    return {"key": key, "unit": unit, "label": label, "derived_from": derived}


def norms(
    entry: dict[str, Any],
    *,
    higher_is_better: bool,
    r: float | None = None,
    sd: float | None = None,
    source: str = "",
    normal: tuple[float, float, str] | None = None,
) -> dict[str, Any]:
    """A metric with what reports need to read it: its direction, the test-retest reliability
    and SD of the reliable change index (Jacobson & Truax 1991), a normal range.

    The built-ins' figures are of the order the cited literature reports for comparable adult
    tasks, not this app's own norms: a study that needs exact figures declares its own module
    version.
    """
    out = {**entry, "higher_is_better": higher_is_better}
    if r is not None and sd is not None:
        out["reliability"] = {"test_retest_r": r, "sd": sd, "source": source}
    if normal is not None:
        out["normal_range"] = {"low": normal[0], "high": normal[1], "source": normal[2]}
    return out
