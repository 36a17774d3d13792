"""Batteries: a study's ordered list of published module versions. Published, never changed."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.batteries.models import Battery, BatteryModule
from server.batteries.schemas import BatteryCreate, BatteryUpdate
from server.core.catalogue import PublicationStatus
from server.core.errors import Conflict, NotFound, Unprocessable
from server.core.models import utcnow
from server.modules.models import Module

log = structlog.get_logger(__name__)

PUBLISHED_MESSAGE = "a published version is immutable; create a new version"


async def get(db: AsyncSession, battery_id: uuid.UUID) -> Battery:
    battery = await db.get(Battery, battery_id)
    if battery is None:
        raise NotFound("No such battery.")
    return battery


async def get_battery_modules(db: AsyncSession, battery_id: uuid.UUID) -> list[Module]:
    """The battery's modules in the order a visit runs them."""
    result = await db.execute(
        select(Module)
        .join(BatteryModule, BatteryModule.module_id == Module.id)
        .where(BatteryModule.battery_id == battery_id)
        .order_by(BatteryModule.position)
    )
    return list(result.scalars())


async def list_batteries(
    db: AsyncSession, *, study_id: uuid.UUID
) -> list[tuple[Battery, list[Module]]]:
    batteries = list(
        (
            await db.execute(
                select(Battery)
                .where(Battery.study_id == study_id)
                .order_by(Battery.key, Battery.version)
            )
        ).scalars()
    )
    modules: dict[uuid.UUID, list[Module]] = defaultdict(list)
    if batteries:
        rows = await db.execute(
            select(BatteryModule.battery_id, Module)
            .join(Module, Module.id == BatteryModule.module_id)
            .where(BatteryModule.battery_id.in_([b.id for b in batteries]))
            .order_by(BatteryModule.battery_id, BatteryModule.position)
        )
        for battery_id, module in rows:
            modules[battery_id].append(module)
    return [(b, modules[b.id]) for b in batteries]


async def _published_modules(db: AsyncSession, module_ids: Sequence[uuid.UUID]) -> list[Module]:
    """The modules in the order given; 422 naming module_ids[i] for each one that cannot be."""
    found = {
        m.id: m
        for m in (await db.execute(select(Module).where(Module.id.in_(module_ids)))).scalars()
    }
    problems: list[dict[str, Any]] = []
    first_id: dict[uuid.UUID, int] = {}
    first_key: dict[str, int] = {}
    for n, module_id in enumerate(module_ids):
        loc = ["body", "module_ids", n]
        module = found.get(module_id)
        if module_id in first_id:
            problems.append(
                {"loc": loc, "msg": f"module_ids[{n}] repeats module_ids[{first_id[module_id]}]"}
            )
            continue
        first_id[module_id] = n
        if module is None:
            problems.append({"loc": loc, "msg": f"module_ids[{n}]: no such module"})
        elif module.status != PublicationStatus.published:
            problems.append(
                {
                    "loc": loc,
                    "msg": f"module_ids[{n}]: {module.key} v{module.version} is a draft; "
                    "a battery takes published modules only",
                }
            )
        elif module.key in first_key:
            # Results are filed by module key: one version of a task per battery.
            problems.append(
                {
                    "loc": loc,
                    "msg": f"module_ids[{n}]: {module.key} is already module_ids"
                    f"[{first_key[module.key]}]",
                }
            )
        else:
            first_key[module.key] = n
    if problems:
        raise Unprocessable("Some modules cannot be part of a battery.", details=problems)
    return [found[module_id] for module_id in module_ids]


def _version_taken(key: str, version: int) -> Conflict:
    return Conflict(
        f"This study already has version {version} of battery {key!r}.",
        error_code="battery_version_taken",
    )


async def create(
    db: AsyncSession, *, study_id: uuid.UUID, battery_in: BatteryCreate
) -> tuple[Battery, list[Module]]:
    modules = await _published_modules(db, battery_in.module_ids)
    taken = await db.scalar(
        select(Battery.id).where(
            Battery.study_id == study_id,
            Battery.key == battery_in.key,
            Battery.version == battery_in.version,
        )
    )
    if taken is not None:
        raise _version_taken(battery_in.key, battery_in.version)
    battery = Battery(
        study_id=study_id,
        key=battery_in.key,
        version=battery_in.version,
        name=battery_in.name,
        status=PublicationStatus.draft,
    )
    db.add(battery)
    try:
        await db.flush()
    except IntegrityError:
        raise _version_taken(battery_in.key, battery_in.version) from None
    await _set_modules(db, battery=battery, modules=modules)
    log.info("battery_created", battery_id=str(battery.id), study_id=str(study_id))
    return battery, modules


async def _set_modules(db: AsyncSession, *, battery: Battery, modules: list[Module]) -> None:
    await db.execute(delete(BatteryModule).where(BatteryModule.battery_id == battery.id))
    db.add_all(
        BatteryModule(battery_id=battery.id, position=position, module_id=module.id)
        for position, module in enumerate(modules)
    )
    await db.flush()


def require_draft(battery: Battery) -> None:
    if battery.status == PublicationStatus.published:
        raise Conflict(PUBLISHED_MESSAGE, error_code="battery_published")


async def update(
    db: AsyncSession, *, battery: Battery, battery_in: BatteryUpdate
) -> tuple[Battery, list[Module]]:
    require_draft(battery)
    if battery_in.module_ids is not None:
        modules = await _published_modules(db, battery_in.module_ids)
        await _set_modules(db, battery=battery, modules=modules)
    else:
        modules = await get_battery_modules(db, battery.id)
    if battery_in.name is not None:
        battery.name = battery_in.name
    battery.updated_at = utcnow()
    await db.flush()
    return battery, modules


async def publish(db: AsyncSession, *, battery: Battery) -> tuple[Battery, list[Module]]:
    require_draft(battery)
    modules = await get_battery_modules(db, battery.id)
    if not modules:
        raise Unprocessable("A battery needs at least one module before it is published.")
    battery.status = PublicationStatus.published
    battery.published_at = utcnow()
    await db.flush()
    log.info("battery_published", battery_id=str(battery.id), study_id=str(battery.study_id))
    return battery, modules
