from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

from server.scoring.quality import PARAMS

# {module_key or "*": {rule: {param: value}}}
ThresholdMap = dict[str, dict[str, dict[str, float]]]


class Trace(BaseModel):
    """What every server value is traceable to: the tuple exports and reports print."""

    module_key: str
    module_version: int
    scorer_key: str
    scorer_version: str
    raw_checksum: str
    submission_id: uuid.UUID
    session_id: uuid.UUID
    device: dict[str, Any]
    app_version: str


class MetricComparison(BaseModel):
    client: Any
    server: Any
    diff: float | None
    tolerance: float
    mismatch: bool


class TaskScoreRead(BaseModel):
    position: int
    trace: Trace
    client_summary: dict[str, Any]
    server_summary: dict[str, Any]
    comparison: dict[str, MetricComparison]
    n_mismatches: int
    problems: list[dict[str, Any]]
    computed_at: datetime


class QualityCheckRead(BaseModel):
    rule: str
    rule_version: str
    scope: str
    submission_id: uuid.UUID | None
    position: int | None
    module_key: str | None
    threshold: dict[str, float]
    observed: float | None
    fired: bool
    detail: dict[str, Any]


class SessionQuality(BaseModel):
    session_id: uuid.UUID
    device: dict[str, Any]
    app_version: str
    # The fired checks; `checks` has every rule evaluated, quiet ones too.
    flags: list[QualityCheckRead]
    checks: list[QualityCheckRead]
    scores: list[TaskScoreRead]


class QualityThresholds(BaseModel):
    """A study's thresholds, replacing its previous ones. Keys: a module key, or "*" for
    every module; then a rule (GET /api/quality-rules lists them) and its parameters."""

    thresholds: ThresholdMap = Field(default_factory=dict)

    @field_validator("thresholds")
    @classmethod
    def _known(cls, value: ThresholdMap) -> ThresholdMap:
        for module_key, rules in value.items():
            if not module_key or len(module_key) > 64:
                raise ValueError("a module key (1-64 characters) or '*'")
            for rule, params in rules.items():
                if rule not in PARAMS:
                    raise ValueError(f"unknown rule {rule!r}; rules: {', '.join(sorted(PARAMS))}")
                for param, number in params.items():
                    if param not in PARAMS[rule]:
                        allowed = ", ".join(sorted(PARAMS[rule]))
                        raise ValueError(f"{rule} has no parameter {param!r} ({allowed})")
                    if not 0 <= number <= 1e9:
                        raise ValueError(f"{rule}.{param} must be between 0 and 1e9")
        return value


class QualityRule(BaseModel):
    rule: str
    rule_version: str
    defaults: dict[str, float]
    module_defaults: dict[str, dict[str, float]]
