"""The built-in task catalogue every installation has, and its loader.

The definitions are in builtin_cognitive (the cognitive tasks) and builtin_questionnaires (the
mood item bank and module). A published version never changes. To change a built-in, add a
new version there (a new entry with the next `version`), never edit one that has shipped:
`load_builtins` inserts what is missing by key and version and leaves existing rows alone.
"""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.core.catalogue import PublicationStatus
from server.item_banks import service as item_banks_service
from server.item_banks.models import ItemBank
from server.item_banks.schemas import ItemBankCreate
from server.modules import service
from server.modules.builtin_cognitive import COGNITIVE_MODULES
from server.modules.builtin_questionnaires import MOOD9_ITEM_BANK, mood9_module
from server.modules.models import Module
from server.modules.schemas import ModuleCreate

BUILTIN_KEYS = ("simple_rt", "choice_rt", "cpt", "digit_span", "mood9")


async def _load_item_bank(db: AsyncSession, definition: dict[str, Any]) -> ItemBank:
    item_bank_in = ItemBankCreate.model_validate(copy.deepcopy(definition))
    existing = await item_banks_service.get_by_key(
        db, key=item_bank_in.key, version=item_bank_in.version
    )
    if existing is not None:
        return existing
    item_bank = await item_banks_service.create(db, item_bank_in=item_bank_in)
    return await item_banks_service.publish(db, item_bank=item_bank)


async def _load_module(db: AsyncSession, definition: dict[str, Any]) -> Module:
    # A copy: the rows must not share nested dicts with these module-level constants.
    module_in = ModuleCreate.model_validate(copy.deepcopy(definition))
    existing = await service.get_by_key(db, key=module_in.key, version=module_in.version)
    if existing is not None:
        return existing
    module = await service.create(db, module_in=module_in)
    return await service.publish(db, module=module)


async def load_builtins(db: AsyncSession) -> dict[str, Module]:
    """Insert the built-in item bank and modules that are missing, published; by key.

    Idempotent by key and version: rows that exist are returned as they are. Flushes,
    never commits.
    """
    mood9_bank = await _load_item_bank(db, MOOD9_ITEM_BANK)
    if mood9_bank.status != PublicationStatus.published:
        raise RuntimeError("item bank mood9 v1 exists as a draft; the built-ins need it published")
    modules = [await _load_module(db, d) for d in COGNITIVE_MODULES]
    modules.append(await _load_module(db, mood9_module(mood9_bank.id)))
    return {m.key: m for m in modules}
