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


def _problem(task_index: int, task: TaskIn, path: list[Any], message: str, rule: str) -> Problem:
    """A problem at `path` inside task `task_index` (path as in the task's JSON)."""
    trial_index = path[1] if len(path) > 1 and path[0] == "trials" else None
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return {
        "task_index": task_index,
        "module_key": task.module_key,
        "module_version": task.module_version,
        "trial_index": trial_index if isinstance(trial_index, int) else None,
        "field": field,
        "message": message,
        "rule": rule,
        "loc": ["body", "tasks", task_index, *path],
    }


def _schema_problem(
    exc: fastjsonschema.JsonSchemaValueException, task_index: int, task: TaskIn, part: str
) -> Problem:
    # fastjsonschema's path starts at "data"; array indexes come back as strings.
    path = [int(p) if isinstance(p, str) and p.isdigit() else p for p in (exc.path or [])[1:]]
    message = exc.message.replace(exc.name or "data", "value", 1)
    return _problem(task_index, task, [part, *path], message, f"schema_{exc.rule}")


def check_task(module: CompiledModule, task: TaskIn, task_index: int) -> list[Problem]:
    """Schema and order problems (the first of each part). Whether the summary agrees with
    the trials is not checked here: the server scores the trials itself, off the request path,
    and a disagreement is a mismatch to record, not a reason to hold data back."""
    problems: list[Problem] = []
    try:
        module.validate_trials(task.trials)
    except fastjsonschema.JsonSchemaValueException as exc:
        problems.append(_schema_problem(exc, task_index, task, "trials"))
    try:
        module.validate_summary(task.summary)
    except fastjsonschema.JsonSchemaValueException as exc:
        problems.append(_schema_problem(exc, task_index, task, "summary"))
    if problems:
        return problems
    previous = -1
    for index, trial in enumerate(task.trials):
        trial_index = trial.get("trial_index")
        if not isinstance(trial_index, int) or trial_index <= previous:
            message = f"out of order: {trial_index} follows {previous}"
            path: list[Any] = ["trials", index, "trial_index"]
            return [_problem(task_index, task, path, message, "trial_order")]
        previous = trial_index
    return problems


def check_tasks(
    tasks: list[TaskIn], modules: dict[tuple[str, int], CompiledModule]
) -> list[Problem]:
    """Every task's problems, in task order; none: the submission is accepted as it is.

    modules: by the (key, version) the tasks name, the module each is checked against."""
    problems: list[Problem] = []
    seen: set[tuple[str, int]] = set()
    for i, task in enumerate(tasks):
        ref = (task.module_key, task.module_version)
        module = modules.get(ref)
        if module is None:
            available = ", ".join(f"{k}@{v}" for k, v in sorted(modules))
            message = (
                f"{task.module_key}@{task.module_version} is not in this session's battery "
                f"({available})"
            )
            problems.append(_problem(i, task, ["module_key"], message, "unknown_module"))
            continue
        if ref in seen:
            message = "module appears twice"
            problems.append(_problem(i, task, ["module_key"], message, "duplicate"))
            continue
        seen.add(ref)
        problems.extend(check_task(module, task, i))
    return problems
