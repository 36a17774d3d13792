"""The checks of a module definition that span its fields, which no single field's validator
can make: each metric against the summary schema, each derived metric's rule against the trial
schema (its field's type, `where` values that can ever match), the item bank against the kind.

service.create and service.update run them on the definition as it would be stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.core.catalogue import PublicationStatus
from server.core.errors import Unprocessable
from server.item_banks.models import ItemBank
from server.modules.models import ModuleKind
from server.modules.schemas import DerivedFrom, Metric, WhereValue


def _declared_types(prop: Any) -> set[str] | None:
    """The JSON types a property schema declares, or None when it declares none directly."""
    if not isinstance(prop, dict) or "type" not in prop:
        return None
    declared = prop["type"]
    return {declared} if isinstance(declared, str) else set(declared)


def _json_type_fits(value: WhereValue, types: set[str]) -> bool:
    if value is None:
        return "null" in types
    if isinstance(value, bool):
        return "boolean" in types
    if isinstance(value, int):
        return bool(types & {"integer", "number"})
    if isinstance(value, float):
        return "number" in types or ("integer" in types and value.is_integer())
    return "string" in types


def _rule_problems(
    rule: DerivedFrom, trial_props: dict[str, Any], loc: list[str | int]
) -> list[dict[str, Any]]:
    problems: list[dict[str, Any]] = []
    if rule.field is not None:
        if rule.field not in trial_props:
            problems.append(
                {
                    "loc": [*loc, "field"],
                    "msg": f"{rule.field!r} is not a property of trial_schema",
                }
            )
        else:
            types = _declared_types(trial_props[rule.field])
            wanted = {"boolean"} if rule.op == "proportion" else {"number", "integer"}
            if types is not None and not types & wanted:
                problems.append(
                    {
                        "loc": [*loc, "field"],
                        "msg": f"{rule.op} needs a {' or '.join(sorted(wanted))} field; "
                        f"{rule.field!r} is {' or '.join(sorted(types))}",
                    }
                )
    for name, value in (rule.where or {}).items():
        if name not in trial_props:
            problems.append(
                {"loc": [*loc, "where", name], "msg": f"{name!r} is not a property of trial_schema"}
            )
            continue
        prop = trial_props[name]
        types = _declared_types(prop)
        if types is not None and not _json_type_fits(value, types):
            problems.append(
                {
                    "loc": [*loc, "where", name],
                    "msg": f"{value!r} can never match: {name!r} is {' or '.join(sorted(types))}",
                }
            )
        elif (
            isinstance(prop, dict)
            and isinstance(prop.get("enum"), list)
            and not any(_same(value, allowed) for allowed in prop["enum"])
        ):
            problems.append(
                {
                    "loc": [*loc, "where", name],
                    "msg": f"{value!r} can never match: not one of {name!r}'s enum values",
                }
            )
    return problems


async def check_definition(
    db: AsyncSession,
    *,
    kind: ModuleKind,
    trial_schema: dict[str, Any],
    summary_schema: dict[str, Any],
    metrics: Sequence[Metric],
    item_bank_id: uuid.UUID | None,
) -> None:
    """Metrics against the schemas, and the item bank against the kind: 422 naming each field."""
    problems: list[dict[str, Any]] = []
    trial_props: dict[str, Any] = trial_schema.get("properties", {})
    summary_props: dict[str, Any] = summary_schema.get("properties", {})
    first: dict[str, int] = {}
    for n, metric in enumerate(metrics):
        loc: list[str | int] = ["body", "metrics", n]
        if metric.key in first:
            problems.append(
                {
                    "loc": [*loc, "key"],
                    "msg": f"{metric.key!r} is already metrics[{first[metric.key]}]",
                }
            )
        first.setdefault(metric.key, n)
        if metric.key not in summary_props:
            problems.append(
                {
                    "loc": [*loc, "key"],
                    "msg": f"{metric.key!r} is not a property of summary_schema",
                }
            )
        elif metric.derived_from is not None:
            types = _declared_types(summary_props[metric.key])
            if types is not None and not types & {"number", "integer"}:
                problems.append(
                    {
                        "loc": [*loc, "key"],
                        "msg": f"a derived metric must be a number in summary_schema; "
                        f"{metric.key!r} is {' or '.join(sorted(types))}",
                    }
                )
        if metric.derived_from is not None:
            problems += _rule_problems(metric.derived_from, trial_props, [*loc, "derived_from"])
    problems += await _item_bank_problems(db, kind=kind, item_bank_id=item_bank_id)
    if problems:
        raise Unprocessable(
            "The module definition is not consistent.",
            error_code="invalid_module_definition",
            details=problems,
        )


async def _item_bank_problems(
    db: AsyncSession, *, kind: ModuleKind, item_bank_id: uuid.UUID | None
) -> list[dict[str, Any]]:
    loc = ["body", "item_bank_id"]
    if kind == ModuleKind.cognitive:
        if item_bank_id is not None:
            return [{"loc": loc, "msg": "a cognitive module takes no item bank"}]
        return []
    if item_bank_id is None:
        return [{"loc": loc, "msg": "a questionnaire module needs a published item bank"}]
    item_bank = await db.get(ItemBank, item_bank_id)
    if item_bank is None:
        return [{"loc": loc, "msg": "no such item bank"}]
    if item_bank.status != PublicationStatus.published:
        return [{"loc": loc, "msg": "the item bank is a draft; publish it first"}]
    return []


def _same(a: Any, b: Any) -> bool:
    # JSON equality: true is not 1, and null equals only null.
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b
    return bool(a == b)
