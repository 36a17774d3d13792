"""Item banks: questionnaire items, versioned; a published version never changes."""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.catalogue import PublicationStatus
from server.core.errors import Conflict, NotFound
from server.core.models import utcnow
from server.item_banks.models import ItemBank
from server.item_banks.schemas import ItemBankCreate, ItemBankUpdate

log = structlog.get_logger(__name__)

PUBLISHED_MESSAGE = "a published version is immutable; create a new version"


def _version_taken(key: str, version: int) -> Conflict:
    return Conflict(
        f"Version {version} of item bank {key!r} already exists.",
        error_code="item_bank_version_taken",
    )


async def list_item_banks(
    db: AsyncSession, *, key: str | None = None, status: PublicationStatus | None = None
) -> list[ItemBank]:
    query = select(ItemBank).order_by(ItemBank.key, ItemBank.version)
    if key is not None:
        query = query.where(ItemBank.key == key)
    if status is not None:
        query = query.where(ItemBank.status == status)
    return list((await db.execute(query)).scalars())


async def get(db: AsyncSession, item_bank_id: uuid.UUID) -> ItemBank:
    item_bank = await db.get(ItemBank, item_bank_id)
    if item_bank is None:
        raise NotFound("No such item bank.")
    return item_bank


async def get_by_key(db: AsyncSession, *, key: str, version: int) -> ItemBank | None:
    return await db.scalar(select(ItemBank).where(ItemBank.key == key, ItemBank.version == version))


async def create(db: AsyncSession, *, item_bank_in: ItemBankCreate) -> ItemBank:
    if await get_by_key(db, key=item_bank_in.key, version=item_bank_in.version) is not None:
        raise _version_taken(item_bank_in.key, item_bank_in.version)
    item_bank = ItemBank(
        key=item_bank_in.key,
        version=item_bank_in.version,
        name=item_bank_in.name,
        description=item_bank_in.description,
        items=[item.model_dump(mode="json") for item in item_bank_in.items],
        status=PublicationStatus.draft,
    )
    db.add(item_bank)
    try:
        await db.flush()
    except IntegrityError:
        # Another request took this version between the check and the insert.
        raise _version_taken(item_bank_in.key, item_bank_in.version) from None
    log.info("item_bank_created", item_bank_id=str(item_bank.id), key=item_bank.key)
    return item_bank


def require_draft(item_bank: ItemBank) -> None:
    if item_bank.status == PublicationStatus.published:
        raise Conflict(PUBLISHED_MESSAGE, error_code="item_bank_published")


async def update(
    db: AsyncSession, *, item_bank: ItemBank, item_bank_in: ItemBankUpdate
) -> ItemBank:
    require_draft(item_bank)
    if item_bank_in.name is not None:
        item_bank.name = item_bank_in.name
    if item_bank_in.description is not None:
        item_bank.description = item_bank_in.description
    if item_bank_in.items is not None:
        item_bank.items = [item.model_dump(mode="json") for item in item_bank_in.items]
    await db.flush()
    return item_bank


async def publish(db: AsyncSession, *, item_bank: ItemBank) -> ItemBank:
    require_draft(item_bank)
    item_bank.status = PublicationStatus.published
    item_bank.published_at = utcnow()
    await db.flush()
    log.info("item_bank_published", item_bank_id=str(item_bank.id), key=item_bank.key)
    return item_bank
