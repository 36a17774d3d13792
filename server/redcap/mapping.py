"""The field mapping: what a submission's values are called in REDCap, checked against the project.

A mapping document (stored in RedcapMapping.document)::

    {"record_id_field": "record_id",          # REDCap's record id field (its first field)
     "record_id_source": "participant_code",  # the only source for now
     "event": "baseline_arm_1" | null,        # longitudinal projects: a unique event name
     "repeating_instrument": "cognitive_session" | null,
     "instance_rule": "per_submission",       # one repeat instance per submission
     "fields": [{"source": "module.srt.mean_rt_ms", "field": "srt_mean_rt_ms"}, ...],
     "targets": {"srt_mean_rt_ms": {"form", "field_type", "validation"}}}  # filled in at save

Sources: session.date, session.started_at, session.visit (battery key), session.device
(device model), session.app_version, and module.<module_key>.<metric_key>.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.batteries.models import Battery, BatteryModule
from server.core.errors import Unprocessable
from server.modules.models import Module
from server.redcap.schemas import MappingIn
from server.redcap.structure import ProjectStructure

SourceKind = Literal["number", "date", "datetime", "text"]

SESSION_SOURCES: dict[str, SourceKind] = {
    "session.date": "date",
    "session.started_at": "datetime",
    "session.visit": "text",
    "session.device": "text",
    "session.app_version": "text",
}
_KIND_WORDS = {"number": "a number", "date": "a date", "datetime": "a date-time", "text": "text"}

# REDCap's legacy validation names, still found in old data dictionaries.
_ALIASES = {"int": "integer", "float": "number", "date": "date_ymd", "datetime": "datetime_ymd"}
NUMBER_VALIDATIONS = frozenset(
    {"integer", "number", "number_1dp", "number_2dp", "number_3dp", "number_4dp"}
)
DATE_VALIDATIONS = frozenset({"date_ymd", "date_mdy", "date_dmy"})
DATETIME_VALIDATIONS = frozenset(
    {
        "datetime_ymd",
        "datetime_mdy",
        "datetime_dmy",
        "datetime_seconds_ymd",
        "datetime_seconds_mdy",
        "datetime_seconds_dmy",
    }
)
_HINT_LIMIT = 300


def validation_of(row: dict[str, Any]) -> str:
    raw = str(row.get("text_validation_type_or_show_slider_number") or "")
    return _ALIASES.get(raw, raw)


def source_kind(source: str) -> SourceKind:
    return SESSION_SOURCES.get(source, "number")


def split_module_source(source: str) -> tuple[str, str] | None:
    """module.<module_key>.<metric_key> -> (module_key, metric_key)."""
    prefix, _, rest = source.partition(".")
    module_key, _, metric_key = rest.rpartition(".")
    if prefix != "module" or not module_key or not metric_key:
        return None
    return module_key, metric_key


async def module_metrics(db: AsyncSession, study_id: uuid.UUID) -> dict[str, set[str]]:
    """module key -> metric keys, for every module in the study's batteries (any version)."""
    rows = await db.execute(
        select(Module.key, Module.metrics)
        .join(BatteryModule, BatteryModule.module_id == Module.id)
        .join(Battery, Battery.id == BatteryModule.battery_id)
        .where(Battery.study_id == study_id)
    )
    catalogue: dict[str, set[str]] = {}
    for key, metrics in rows:
        catalogue.setdefault(key, set()).update(
            str(m["key"]) for m in metrics or [] if isinstance(m, dict) and "key" in m
        )
    return catalogue


def type_problem(row: dict[str, Any], kind: SourceKind) -> str | None:
    """Why a field of this type cannot hold a value of this kind, or None if it can."""
    field_type = str(row.get("field_type") or "")
    words = _KIND_WORDS[kind]
    if field_type == "notes":
        return None
    if field_type != "text":
        return f"a {field_type} field cannot hold {words}"
    validation = validation_of(row)
    if validation == "":
        return None
    fits = {
        "number": validation in NUMBER_VALIDATIONS,
        "date": validation in DATE_VALIDATIONS,
        "datetime": validation in DATE_VALIDATIONS | DATETIME_VALIDATIONS,
        "text": False,
    }[kind]
    if fits:
        return None
    return f"a text field with {validation} validation cannot hold {words}"


class _Problems:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, loc: list[str | int], msg: str, **extra: Any) -> None:
        self.items.append({"loc": ["body", *loc], "msg": msg, **extra})


def _hint(names: list[str]) -> list[str]:
    return names[:_HINT_LIMIT]


def validate(
    mapping: MappingIn, structure: ProjectStructure, catalogue: dict[str, set[str]] | None
) -> dict[str, dict[str, str]]:
    """Check a mapping against the project; the targets (form, type) of its fields, or 422.
    Without a catalogue, the REDCap side only (the sources are not looked at)."""
    problems = _Problems()
    if mapping.record_id_field != structure.record_id_field:
        problems.add(
            ["record_id_field"],
            f"REDCap's record id field is '{structure.record_id_field}'",
        )
    event = (mapping.event or "") if structure.is_longitudinal else ""
    if structure.is_longitudinal:
        if not mapping.event:
            problems.add(["event"], "a longitudinal project needs the unique event name")
        elif mapping.event not in structure.forms_in_event:
            problems.add(
                ["event"], f"REDCap has no event '{mapping.event}'", events=structure.events
            )
        elif structure.is_repeating_form(event, ""):
            problems.add(["event"], f"'{mapping.event}' is a repeating event: not supported")
    elif mapping.event:
        problems.add(["event"], "a classic project has no events: leave it null")
    instrument = mapping.repeating_instrument
    # With a wrong instrument, each field's form cannot be judged: that one problem is enough.
    context_known = True
    if instrument and not structure.is_repeating_form(event, instrument):
        context_known = False
        where = f" in event '{event}'" if event else ""
        problems.add(
            ["repeating_instrument"],
            f"'{instrument}' is not a repeating instrument{where}",
            repeating_instruments=structure.repeating_forms(event),
        )
    targets: dict[str, dict[str, str]] = {}
    for i, item in enumerate(mapping.fields):
        if catalogue is not None:
            _check_source(problems, i, item.source, catalogue)
        row = structure.metadata.get(item.field)
        if row is None or str(row.get("field_type")) == "descriptive":
            problems.add(
                ["fields", i, "field"],
                f"REDCap has no field '{item.field}'",
                redcap_fields=_hint(structure.export_field_names),
            )
            continue
        if item.field in targets:
            problems.add(["fields", i, "field"], f"'{item.field}' is mapped twice")
            continue
        form = str(row.get("form_name"))
        targets[item.field] = {
            "form": form,
            "field_type": str(row.get("field_type") or ""),
            "validation": validation_of(row),
        }
        if item.field == structure.record_id_field:
            problems.add(
                ["fields", i, "field"], "this is the record id field: record_id_source fills it"
            )
            continue
        if str(row.get("field_type")) == "checkbox":
            problems.add(["fields", i, "field"], "checkbox fields cannot be mapped")
            continue
        if not context_known:
            pass
        elif structure.is_longitudinal and form not in structure.forms_in_event.get(event, {form}):
            problems.add(
                ["fields", i, "field"],
                f"'{item.field}' is on form '{form}', which is not designated for event '{event}'",
            )
        elif instrument and form != instrument:
            problems.add(
                ["fields", i, "field"],
                f"'{item.field}' is on form '{form}', not on the repeating instrument "
                f"'{instrument}'",
            )
        elif not instrument and structure.is_repeating_form(event, form):
            problems.add(
                ["fields", i, "field"],
                f"'{item.field}' is on the repeating instrument '{form}': set repeating_instrument",
            )
        if (problem := type_problem(row, source_kind(item.source))) is not None:
            problems.add(["fields", i, "field"], f"'{item.field}' is {problem}")
    if problems.items:
        raise Unprocessable(
            "The mapping does not fit the REDCap project.",
            error_code="invalid_mapping",
            details=problems.items,
        )
    return targets


def misfits(document: dict[str, Any], structure: ProjectStructure) -> list[str]:
    """What in a saved mapping (RedcapMapping.document) the project no longer fits, by the
    rules its save was checked with; [] when it fits. Each names the part: "event: ..."."""
    mapping = MappingIn.model_validate({k: v for k, v in document.items() if k != "targets"})
    try:
        validate(mapping, structure, None)
    except Unprocessable as exc:
        return [f"{problem['loc'][1]}: {problem['msg']}" for problem in exc.details]
    return []


def _check_source(problems: _Problems, i: int, source: str, catalogue: dict[str, set[str]]) -> None:
    if source in SESSION_SOURCES:
        return
    parts = split_module_source(source)
    if parts is None:
        problems.add(
            ["fields", i, "source"],
            "a source is session.date, session.started_at, session.visit, session.device, "
            "session.app_version or module.<module_key>.<metric_key>",
        )
        return
    module_key, metric_key = parts
    if module_key not in catalogue:
        problems.add(
            ["fields", i, "source"],
            f"no module '{module_key}' in this study's batteries",
            modules=sorted(catalogue),
        )
    elif metric_key not in catalogue[module_key]:
        problems.add(
            ["fields", i, "source"],
            f"module '{module_key}' has no metric '{metric_key}'",
            metrics=sorted(catalogue[module_key]),
        )
