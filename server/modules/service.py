"""Modules: versioned task definitions; a published version never changes.

The submit path (server/submissions/validation.py) checks submitted data against their schemas.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from typing import Any

import structlog
from pydantic import TypeAdapter
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.catalogue import PublicationStatus
from server.core.errors import Conflict, NotFound, Unprocessable
from server.core.models import utcnow
from server.item_banks.models import ItemBank
from server.modules.models import Module, ModuleKind
from server.modules.schemas import (
    DerivedFrom,
    Metric,
    ModuleCreate,
    ModuleUpdate,
    WhereValue,
)

log = structlog.get_logger(__name__)

PUBLISHED_MESSAGE = "a published version is immutable; create a new version"
_METRICS = TypeAdapter(list[Metric])


# --- the catalogue --------------------------------------------------------------------------


async def list_modules(
    db: AsyncSession,
    *,
    key: str | None = None,
    kind: ModuleKind | None = None,
    status: PublicationStatus | None = None,
) -> list[Module]:
    query = select(Module).order_by(Module.key, Module.version)
    if key is not None:
        query = query.where(Module.key == key)
    if kind is not None:
        query = query.where(Module.kind == kind)
    if status is not None:
        query = query.where(Module.status == status)
    return list((await db.execute(query)).scalars())


async def get(db: AsyncSession, module_id: uuid.UUID) -> Module:
    module = await db.get(Module, module_id)
    if module is None:
        raise NotFound("No such module.")
    return module


async def get_by_key(db: AsyncSession, *, key: str, version: int) -> Module | None:
    return await db.scalar(select(Module).where(Module.key == key, Module.version == version))


def _version_taken(key: str, version: int) -> Conflict:
    return Conflict(
        f"Version {version} of module {key!r} already exists.", error_code="module_version_taken"
    )


async def _insert(db: AsyncSession, module: Module) -> Module:
    db.add(module)
    try:
        await db.flush()
    except IntegrityError:
        # Another request took this key and version between the check and the insert.
        raise _version_taken(module.key, module.version) from None
    log.info("module_created", module_id=str(module.id), key=module.key, version=module.version)
    return module


async def create(db: AsyncSession, *, module_in: ModuleCreate) -> Module:
    await check_definition(
        db,
        kind=module_in.kind,
        trial_schema=module_in.trial_schema,
        summary_schema=module_in.summary_schema,
        metrics=module_in.metrics,
        item_bank_id=module_in.item_bank_id,
    )
    if await get_by_key(db, key=module_in.key, version=module_in.version) is not None:
        raise _version_taken(module_in.key, module_in.version)
    module = Module(
        key=module_in.key,
        version=module_in.version,
        kind=module_in.kind,
        name=module_in.name,
        description=module_in.description,
        trial_schema=module_in.trial_schema,
        summary_schema=module_in.summary_schema,
        metrics=[m.model_dump(mode="json") for m in module_in.metrics],
        item_bank_id=module_in.item_bank_id,
        status=PublicationStatus.draft,
    )
    return await _insert(db, module)


def require_draft(module: Module) -> None:
    if module.status == PublicationStatus.published:
        raise Conflict(PUBLISHED_MESSAGE, error_code="module_published")


async def update(db: AsyncSession, *, module: Module, module_in: ModuleUpdate) -> Module:
    require_draft(module)
    given = module_in.model_fields_set
    kind = module_in.kind or module.kind
    trial_schema = module_in.trial_schema or module.trial_schema
    summary_schema = module_in.summary_schema or module.summary_schema
    metrics = module_in.metrics if module_in.metrics is not None else module_metrics(module)
    item_bank_id = module_in.item_bank_id if "item_bank_id" in given else module.item_bank_id
    # The draft as it would be after the change is checked as a whole.
    await check_definition(
        db,
        kind=kind,
        trial_schema=trial_schema,
        summary_schema=summary_schema,
        metrics=metrics,
        item_bank_id=item_bank_id,
    )
    module.kind = kind
    module.trial_schema = trial_schema
    module.summary_schema = summary_schema
    module.metrics = [m.model_dump(mode="json") for m in metrics]
    module.item_bank_id = item_bank_id
    if module_in.name is not None:
        module.name = module_in.name
    if module_in.description is not None:
        module.description = module_in.description
    await db.flush()
    return module


async def publish(db: AsyncSession, *, module: Module) -> Module:
    require_draft(module)
    module.status = PublicationStatus.published
    module.published_at = utcnow()
    await db.flush()
    log.info("module_published", module_id=str(module.id), key=module.key, version=module.version)
    return module


async def new_version(db: AsyncSession, *, module: Module) -> Module:
    """A draft copy of the module, numbered one past the highest version of its key."""
    latest = await db.scalar(select(func.max(Module.version)).where(Module.key == module.key))
    draft = Module(
        key=module.key,
        version=(latest or module.version) + 1,
        kind=module.kind,
        name=module.name,
        description=module.description,
        trial_schema=copy.deepcopy(module.trial_schema),
        summary_schema=copy.deepcopy(module.summary_schema),
        metrics=copy.deepcopy(module.metrics),
        item_bank_id=module.item_bank_id,
        status=PublicationStatus.draft,
    )
    return await _insert(db, draft)


def module_metrics(module: Module) -> list[Metric]:
    return _METRICS.validate_python(module.metrics)


# --- definition checks that span fields -----------------------------------------------------


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
