from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from server.core.catalogue import KEY, PublicationStatus

ITEM_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ItemOption(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Response codes are small numbers; the bound also keeps them exact in JSON storage.
    code: int = Field(ge=-(2**31), le=2**31 - 1)
    label: str = Field(min_length=1, max_length=200)


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(pattern=ITEM_ID)
    stem: str = Field(min_length=1, max_length=2000)
    options: list[ItemOption] = Field(min_length=2, max_length=50)
    reverse_scored: bool = False

    @model_validator(mode="after")
    def _unique_codes(self) -> Item:
        seen: set[int] = set()
        for n, option in enumerate(self.options):
            if option.code in seen:
                raise ValueError(f"options[{n}]: code {option.code} is used twice in this item")
            seen.add(option.code)
        return self


def check_items(items: list[Item]) -> list[Item]:
    first: dict[str, int] = {}
    for n, item in enumerate(items):
        if item.item_id in first:
            raise ValueError(
                f"items[{n}]: item_id {item.item_id!r} repeats items[{first[item.item_id]}]"
            )
        first[item.item_id] = n
    return items


Items = Annotated[list[Item], Field(min_length=1, max_length=500), AfterValidator(check_items)]


class ItemBankCreate(BaseModel):
    key: str = Field(pattern=KEY)
    version: int = Field(default=1, ge=1)
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)
    items: Items


class ItemBankUpdate(BaseModel):
    """Draft item banks only; nulls change nothing."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    items: Items | None = None


class ItemBankRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    key: str
    version: int
    name: str
    description: str
    items: list[Item]
    status: PublicationStatus
    published_at: datetime | None
    created_at: datetime
    updated_at: datetime
