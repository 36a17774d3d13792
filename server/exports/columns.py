"""What each column of an export file is: its name, label, type, unit, module and labels.

The codebook lists these, the Parquet, SPSS and Stata writers type and label by them. Trial
columns come from the module's trial schema (and its item bank's options for response codes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STRING = "string"
INTEGER = "integer"
NUMBER = "number"
BOOLEAN = "boolean"
BOOLEAN_LABELS = {0: "false", 1: "true"}
MISSING = "empty cell (CSV), null (Parquet), system-missing (SPSS), . (Stata)"


@dataclass(frozen=True)
class Column:
    name: str
    label: str
    type: str = STRING
    unit: str = ""
    module_key: str = ""
    module_version: int | None = None
    allowed_values: tuple[str, ...] = ()
    # code -> label; booleans are written 0/1 to SPSS and Stata with these labels.
    value_labels: dict[int, str] = field(default_factory=dict)


def trial_id_columns() -> list[Column]:
    return [
        Column("participant_code", "Participant code"),
        Column("site", "Site code"),
        Column("visit", "Visit (schedule)"),
        Column("session_id", "Assessment session id"),
        Column("submission_id", "Submission id"),
        Column("module_key", "Module key"),
        Column("module_version", "Module version", INTEGER),
        Column("trial_position", "Trial position in the task (from 0)", INTEGER),
    ]


def _json_type(schema: dict[str, Any]) -> str:
    kinds = schema.get("type", STRING)
    if isinstance(kinds, list):
        kinds = next((k for k in kinds if k != "null"), STRING)
    return {INTEGER: INTEGER, NUMBER: NUMBER, BOOLEAN: BOOLEAN}.get(str(kinds), STRING)


def _unit(name: str) -> str:
    for suffix, unit in (("_ms", "ms"), ("_s", "s"), ("_rate", "proportion")):
        if name.endswith(suffix):
            return unit
    return ""


def trial_columns(module: Any, item_bank: Any | None) -> list[Column]:
    """The module's trial fields, in its schema's order (module: a Module row)."""
    properties: dict[str, Any] = module.trial_schema.get("properties", {})
    options: dict[int, str] = {}
    if item_bank is not None and item_bank.items:
        # Every item of a bank shares one answer scale in the built-ins; the first item's
        # options label the response codes (per-item scales are in the codebook's items).
        options = {int(o["code"]): str(o["label"]) for o in item_bank.items[0].get("options", [])}
    columns = []
    for name, schema in properties.items():
        kind = _json_type(schema)
        labels: dict[int, str] = {}
        if kind == BOOLEAN:
            labels = dict(BOOLEAN_LABELS)
        elif name == "response_code" and options:
            labels = options
        allowed = tuple(str(v) for v in schema.get("enum", ()))
        columns.append(
            Column(
                name,
                str(schema.get("description", name.replace("_", " "))),
                kind,
                _unit(name),
                module.key,
                module.version,
                allowed,
                labels,
            )
        )
    return columns
