from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from server.auth.deps import CurrentAdmin, CurrentPrincipal
from server.core.catalogue import PublicationStatus
from server.core.db import DBSession
from server.item_banks import service
from server.item_banks.schemas import ItemBankCreate, ItemBankRead, ItemBankUpdate

router = APIRouter(prefix="/api/item-banks", tags=["item-banks"])


@router.get("", response_model=list[ItemBankRead])
async def list_item_banks(
    db: DBSession,
    _: CurrentPrincipal,
    key: str | None = None,
    publication_status: Annotated[PublicationStatus | None, Query(alias="status")] = None,
) -> list[ItemBankRead]:
    banks = await service.list_item_banks(db, key=key, status=publication_status)
    return [ItemBankRead.model_validate(b) for b in banks]


@router.post("", response_model=ItemBankRead, status_code=status.HTTP_201_CREATED)
async def create_item_bank(
    item_bank_in: ItemBankCreate, db: DBSession, _: CurrentAdmin
) -> ItemBankRead:
    return ItemBankRead.model_validate(await service.create(db, item_bank_in=item_bank_in))


@router.get("/{item_bank_id}", response_model=ItemBankRead)
async def get_item_bank(
    item_bank_id: uuid.UUID, db: DBSession, _: CurrentPrincipal
) -> ItemBankRead:
    return ItemBankRead.model_validate(await service.get(db, item_bank_id))


@router.patch("/{item_bank_id}", response_model=ItemBankRead)
async def update_item_bank(
    item_bank_id: uuid.UUID, item_bank_in: ItemBankUpdate, db: DBSession, _: CurrentAdmin
) -> ItemBankRead:
    item_bank = await service.get(db, item_bank_id)
    updated = await service.update(db, item_bank=item_bank, item_bank_in=item_bank_in)
    return ItemBankRead.model_validate(updated)


@router.post("/{item_bank_id}/publish", response_model=ItemBankRead)
async def publish_item_bank(
    item_bank_id: uuid.UUID, db: DBSession, _: CurrentAdmin
) -> ItemBankRead:
    item_bank = await service.get(db, item_bank_id)
    return ItemBankRead.model_validate(await service.publish(db, item_bank=item_bank))
