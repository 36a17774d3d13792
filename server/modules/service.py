"""Modules: versioned task definitions; a published version never changes.

The catalogue: list, read, create, update a draft, publish, copy into a new version. The
checks a definition must pass across its fields are in definition_checks.py; the submit path
(server/submissions/validation.py) checks submitted data against the schemas.
"""

from __future__ import annotations

import copy
import uuid

import structlog
from pydantic import TypeAdapter
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.catalogue import PublicationStatus
from server.core.errors import Conflict, NotFound
from server.core.models import utcnow
from server.modules.definition_checks import check_definition
from server.modules.models import Module, ModuleKind
from server.modules.schemas import Metric, ModuleCreate, ModuleUpdate

log = structlog.get_logger(__name__)

PUBLISHED_MESSAGE = "a published version is immutable; create a new version"
_METRICS = TypeAdapter(list[Metric])


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
