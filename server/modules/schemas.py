"""Module definitions as the API takes and gives them: the metrics a module reports (each
optionally derived from the trials, with the psychometrics reports read), and the module's
create, update, read and reference models.

The two JSON Schemas of a definition are checked by server.modules.json_schema.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.core.catalogue import KEY, PublicationStatus
from server.modules.json_schema import FIELD_NAME, JsonSchema
from server.modules.models import ModuleKind

AggregateOp = Literal["count", "mean", "sum", "min", "max", "proportion"]

# Absolute tolerances, when the definition gives none.
DEFAULT_TOLERANCE: dict[str, float] = {
    "count": 0.0,
    "sum": 0.0,
    "min": 0.0,
    "max": 0.0,
    "mean": 0.5,
    "proportion": 0.005,
}

WhereValue = bool | int | float | str | None


class DerivedFrom(BaseModel):
    """The summary's metric as this aggregate over the trials, within tolerance. A submitted
    summary that differs is stored as sent (never refused): the server's scoring records it.

    `where` selects the trials whose fields equal every value it gives (all of them when
    null). count: how many trials are selected (takes no `field`); mean, sum, min, max:
    over the non-null values of the numeric trial `field`; proportion: the share of the
    selected trials whose boolean `field` is true. With no trials (no values) to aggregate,
    count is 0 and every other op is null, and the summary's metric must then be null.
    `tolerance` is absolute; stored filled in (0.5 for mean, 0.005 for proportion, 0 else).
    """

    model_config = ConfigDict(extra="forbid")

    op: AggregateOp
    field: str | None = None
    where: dict[str, WhereValue] | None = None
    tolerance: float = Field(ge=0, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _default_tolerance(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("tolerance") is None:
            data = {**data, "tolerance": DEFAULT_TOLERANCE.get(str(data.get("op")), 0.0)}
        return data

    @model_validator(mode="after")
    def _shape(self) -> DerivedFrom:
        if self.op == "count" and self.field is not None:
            raise ValueError("count takes no field: it counts the trials `where` selects")
        if self.op != "count" and self.field is None:
            raise ValueError(f"{self.op} needs the trial field it aggregates")
        if self.where == {}:
            self.where = None
        return self


class Reliability(BaseModel):
    """What the reliable change index (Jacobson & Truax 1991) of a metric needs: its
    test-retest reliability and the SD of the population it was measured in, with their source."""

    model_config = ConfigDict(extra="forbid")

    test_retest_r: float = Field(gt=0, lt=1)
    sd: float = Field(gt=0, allow_inf_nan=False)
    source: str = Field(default="", max_length=500)


class NormalRange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    low: float = Field(allow_inf_nan=False)
    high: float = Field(allow_inf_nan=False)
    source: str = Field(default="", max_length=500)


class Metric(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=FIELD_NAME)
    unit: str = Field(default="", max_length=32)
    label: str = Field(min_length=1, max_length=200)
    derived_from: DerivedFrom | None = None
    # Reports: a metric whose higher values are worse (reaction times, symptom totals) turns
    # the sign of "improved"; None: no direction (counts that only describe the run).
    higher_is_better: bool | None = None
    reliability: Reliability | None = None
    normal_range: NormalRange | None = None


class ModuleCreate(BaseModel):
    key: str = Field(pattern=KEY)
    version: int = Field(default=1, ge=1)
    kind: ModuleKind
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)
    trial_schema: JsonSchema
    summary_schema: JsonSchema
    metrics: list[Metric] = Field(default_factory=list, max_length=100)
    item_bank_id: uuid.UUID | None = None


class ModuleUpdate(BaseModel):
    """Draft modules only. `item_bank_id: null` clears it; other nulls change nothing."""

    kind: ModuleKind | None = None
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    trial_schema: JsonSchema | None = None
    summary_schema: JsonSchema | None = None
    metrics: list[Metric] | None = Field(default=None, max_length=100)
    item_bank_id: uuid.UUID | None = None


class ModuleRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    key: str
    version: int
    kind: ModuleKind
    name: str
    description: str
    trial_schema: dict[str, Any]
    summary_schema: dict[str, Any]
    metrics: list[Metric]
    item_bank_id: uuid.UUID | None
    status: PublicationStatus
    published_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ModuleRef(BaseModel):
    """A module as a battery lists it."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    key: str
    version: int
    kind: ModuleKind
    name: str
