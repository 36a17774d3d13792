"""Checking a submission's tasks against the module versions of its session's battery.

Published modules never change, so each one's JSON Schemas are compiled once per process.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

import fastjsonschema

from server.submissions.schemas import TaskIn

Problem = dict[str, Any]


@dataclass(frozen=True)
class CompiledModule:
    module_id: uuid.UUID
    key: str
    version: int
    validate_trials: Any
    validate_summary: Any
    derived: tuple[tuple[str, dict[str, Any]], ...]


_compiled: dict[uuid.UUID, CompiledModule] = {}
_by_ref: dict[tuple[str, int], CompiledModule] = {}


def compiled_by_ref() -> dict[tuple[str, int], CompiledModule]:
    """Every module this process has compiled, by (key, version)."""
    return _by_ref


def _array_of(item_schema: dict[str, Any]) -> dict[str, Any]:
    """One schema for the whole trial list; the item's local definitions move up with it so
    its "#/$defs/..." references still resolve from the new root."""
    item = {k: v for k, v in item_schema.items() if k not in ("$defs", "definitions", "$schema")}
    wrapper: dict[str, Any] = {"type": "array", "items": item}
    for key in ("$defs", "definitions", "$schema"):
        if key in item_schema:
            wrapper[key] = item_schema[key]
    return wrapper


def compile_module(
    module_id: uuid.UUID,
    key: str,
    version: int,
    trial_schema: dict[str, Any],
    summary_schema: dict[str, Any],
    metrics: list[dict[str, Any]],
) -> CompiledModule:
    cached = _compiled.get(module_id)
    if cached is not None:
        return cached
    compiled = CompiledModule(
        module_id=module_id,
        key=key,
        version=version,
        # One validator over the whole array: one call for 300 trials, not 300.
        validate_trials=fastjsonschema.compile(_array_of(trial_schema)),
        validate_summary=fastjsonschema.compile(summary_schema),
        derived=tuple((m["key"], m["derived_from"]) for m in metrics if m.get("derived_from")),
    )
    _compiled[module_id] = compiled
    _by_ref[(key, version)] = compiled
    return compiled


def _schema_problem(exc: fastjsonschema.JsonSchemaValueException, loc: list[Any]) -> Problem:
    # fastjsonschema's path starts at "data"; array indexes come back as strings.
    path = [int(p) if isinstance(p, str) and p.isdigit() else p for p in (exc.path or [])[1:]]
    message = exc.message.replace(exc.name or "data", "value", 1)
    return {"loc": [*loc, *path], "msg": message, "type": f"schema_{exc.rule}"}


def _selector(where: dict[str, Any]) -> Any:
    """A fast filter for the usual one- or two-condition `where` (this runs per trial)."""
    items = list(where.items())
    if not items:
        return None
    if len(items) == 1:
        ((k1, v1),) = items
        return lambda t: t.get(k1) == v1
    if len(items) == 2:
        (k1, v1), (k2, v2) = items
        return lambda t: t.get(k1) == v1 and t.get(k2) == v2
    return lambda t: all(t.get(k) == v for k, v in items)


def _aggregate(rule: dict[str, Any], trials: list[dict[str, Any]]) -> float | None:
    keep = _selector(rule.get("where") or {})
    selected = trials if keep is None else [t for t in trials if keep(t)]
    op = rule["op"]
    if op == "count":
        return float(len(selected))
    field = rule["field"]
    if op == "proportion":
        return sum(1 for t in selected if t.get(field)) / len(selected) if selected else None
    values = [v for t in selected if (v := t.get(field)) is not None]
    if not values:
        return None
    if op == "mean":
        return math.fsum(values) / len(values)
    if op == "sum":
        return math.fsum(values)
    if op == "min":
        return float(min(values))
    if op == "max":
        return float(max(values))
    raise ValueError(f"unknown aggregate {op}")


def _consistency(
    module: CompiledModule, summary: dict[str, Any], trials: list[dict[str, Any]], loc: list[Any]
) -> list[Problem]:
    problems = []
    for metric, rule in module.derived:
        expected = _aggregate(rule, trials)
        reported = summary.get(metric)
        tolerance = float(rule.get("tolerance", 0.0 if rule["op"] == "count" else 0.5))
        if expected is None and reported is None:
            continue
        if (
            expected is None
            or not isinstance(reported, int | float)
            or abs(float(reported) - expected) > tolerance + 1e-9
        ):
            problems.append(
                {
                    "loc": [*loc, "summary", metric],
                    "msg": f"inconsistent with the trials: they give {expected}, "
                    f"the summary says {reported}",
                    "type": "summary_inconsistent",
                }
            )
    return problems


def check_task(module: CompiledModule, task: TaskIn, loc: list[Any]) -> list[Problem]:
    problems: list[Problem] = []
    try:
        module.validate_trials(task.trials)
    except fastjsonschema.JsonSchemaValueException as exc:
        problems.append(_schema_problem(exc, [*loc, "trials"]))
    try:
        module.validate_summary(task.summary)
    except fastjsonschema.JsonSchemaValueException as exc:
        problems.append(_schema_problem(exc, [*loc, "summary"]))
    if problems:
        return problems
    previous = -1
    for index, trial in enumerate(task.trials):
        trial_index = trial.get("trial_index")
        if not isinstance(trial_index, int) or trial_index <= previous:
            problems.append(
                {
                    "loc": [*loc, "trials", index, "trial_index"],
                    "msg": f"out of order: {trial_index} follows {previous}",
                    "type": "trial_order",
                }
            )
            return problems
        previous = trial_index
    return _consistency(module, task.summary, task.trials, loc)


def check_tasks(
    tasks: list[TaskIn], modules: dict[tuple[str, int], CompiledModule]
) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[tuple[str, int]] = set()
    for i, task in enumerate(tasks):
        loc: list[Any] = ["body", "tasks", i]
        ref = (task.module_key, task.module_version)
        module = modules.get(ref)
        if module is None:
            available = ", ".join(f"{k}@{v}" for k, v in sorted(modules))
            problems.append(
                {
                    "loc": [*loc, "module_key"],
                    "msg": f"{task.module_key}@{task.module_version} is not in this session's "
                    f"battery ({available})",
                    "type": "unknown_module",
                }
            )
            continue
        if ref in seen:
            problems.append(
                {"loc": [*loc, "module_key"], "msg": "module appears twice", "type": "duplicate"}
            )
            continue
        seen.add(ref)
        problems.extend(check_task(module, task, loc))
    return problems
