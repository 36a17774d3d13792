"""Checking a submission's tasks against the module versions of its session's battery.

Shape and order only: whether the summary agrees with the trials is the server's scoring's
question (server.scoring), answered after the submission is stored, never a reason to refuse it.

Published modules never change, so each one's JSON Schemas are compiled once per process.
"""

from __future__ import annotations

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
    )
    _compiled[module_id] = compiled
    _by_ref[(key, version)] = compiled
    return compiled


def _schema_problem(exc: fastjsonschema.JsonSchemaValueException, loc: list[Any]) -> Problem:
    # fastjsonschema's path starts at "data"; array indexes come back as strings.
    path = [int(p) if isinstance(p, str) and p.isdigit() else p for p in (exc.path or [])[1:]]
    message = exc.message.replace(exc.name or "data", "value", 1)
    return {"loc": [*loc, *path], "msg": message, "type": f"schema_{exc.rule}"}


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
    return problems


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
