"""Record-import validation. REDCap rejects the whole call if any row has any problem."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .project import ImportColumn, ProjectModel
from .store import DAG, EVENT, INSTANCE, INSTRUMENT, RowKey
from .values import check_complete, check_value, convert_date, validation_type

# REDCap's own texts, as REDCap users quote them (PyCap issues #142 and #154, redcapAPI #348,
# INTERPOLAR #308); events named as REDCap names them: 'Month 6 (Arm 1: Arm 1)'.
UNKNOWN_FIELDS = "The following fields were not found in the project as real data fields: {}"
BAD_EVENTS = "The following values of redcap_event_name are invalid: {}"
NOT_A_REPEATING_INSTRUMENT = (
    "redcap_repeat_instrument must be the unique form name of a Repeating Instrument. It "
    "currently does not match the unique form name of any Repeating Instruments.  Please fix "
    "this in the data import file and try again."
)
INSTANCE_NOT_ALLOWED = (
    "redcap_repeat_instance cannot have a value since this instrument or event is not a "
    "repeating instrument or repeating event, respectively.  The redcap_repeat_instance field "
    "must be left blank for this row of data."
)
NOT_IN_EVENT = (
    "This field ('{field}') exists on an instrument that is not designated for the event named "
    "'{event}'. You are not allowed to import data for this field into this event."
)
NEEDS_REPEAT = (
    "This field ('{field}') exists on a Repeating Instrument named '{form}'. However, the "
    "fields 'redcap_repeat_instance' and/or 'redcap_repeat_instrument' for this row of data have "
    "no value, which are both required for importing data into a Repeating Instrument.  You are "
    "not allowed to import data for this field into a non-repeating instrument."
)
# No real REDCap answer to these is on record: the stand-in's own words.
INSTANCE_INVALID = (
    'redcap_repeat_instance must be an integer greater than 0 (or "new") for a repeating '
    "instrument or repeating event."
)
BLANK_RECORD = "The record ID cannot be blank."
BAD_DAG = "The value is not a valid unique group name of a Data Access Group."
OTHER_INSTRUMENT = (
    'This field is not on the instrument "{instrument}" named in redcap_repeat_instrument.'
)
NOT_A_LIST = "The data being imported is not formatted correctly: it must be a list of records."


class ImportRejected(Exception):
    """The call fails with HTTP 400 and {"error": message}."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class PlannedRow:
    key: RowKey
    values: dict[str, str]  # data columns only; "" = blank
    dag: str | None  # None: column absent
    new_instance: bool = False  # redcap_repeat_instance was "new"


@dataclass
class ImportPlan:
    rows: list[PlannedRow] = field(default_factory=list)
    records: list[str] = field(default_factory=list)  # distinct, in order of appearance
    warnings: list[str] = field(default_factory=list)


def to_text(value: Any) -> str:
    """How PHP's json_decode + string cast turns a JSON value into REDCap's stored text."""
    if value is None or value is False:
        return ""
    if value is True:
        return "1"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def csv_line(*cells: str) -> str:
    return ",".join('"' + cell.replace('"', '""') + '"' for cell in cells)


def _rows_as_text(rows: Any) -> list[dict[str, str]]:
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ImportRejected(NOT_A_LIST)
    return [{str(k): to_text(v) for k, v in row.items()} for row in rows]


def _check_columns(project: ProjectModel, rows: list[dict[str, str]]) -> None:
    columns = list(dict.fromkeys(c for row in rows for c in row))
    allowed = set(project.import_columns) | {INSTRUMENT, INSTANCE, "redcap_survey_identifier"}
    allowed |= {f"{form}_timestamp" for form in project.form_names}
    if project.is_longitudinal:
        allowed.add(EVENT)
    if project.dags:
        allowed.add(DAG)
    unknown = [c for c in columns if c not in allowed]
    if unknown:
        raise ImportRejected(UNKNOWN_FIELDS.format(", ".join(unknown)))
    if project.is_longitudinal:
        # A row without an event is no error: REDCap files it under the first event.
        names = set(project.event_names) | {""}
        bad = list(dict.fromkeys(r.get(EVENT, "") for r in rows if r.get(EVENT, "") not in names))
        if bad:
            raise ImportRejected(BAD_EVENTS.format(", ".join(bad)))


def _row_key(
    project: ProjectModel, record: str, row: dict[str, str], lines: list[str]
) -> tuple[RowKey, bool] | None:
    """Resolve the row's context; append REDCap's per-row lines for repeating misuse."""
    # REDCap files a longitudinal row without redcap_event_name under the first event.
    event = (row.get(EVENT) or project.first_event) if project.is_longitudinal else ""
    instrument = row.get(INSTRUMENT, "")
    instance_text = row.get(INSTANCE, "")
    before = len(lines)
    repeats = project.is_repeating_event(event) and not instrument
    if instrument:
        repeats = project.is_repeating_form(event, instrument)
        if not repeats:
            lines.append(csv_line(record, INSTRUMENT, instrument, NOT_A_REPEATING_INSTRUMENT))
    if not repeats:
        if instance_text:
            lines.append(csv_line(record, INSTANCE, instance_text, INSTANCE_NOT_ALLOWED))
        return None if len(lines) > before else (RowKey(record, event), False)
    if instance_text == "new":
        return RowKey(record, event, instrument, 0), True
    if not re.fullmatch(r"\d+", instance_text) or int(instance_text) < 1:
        lines.append(csv_line(record, INSTANCE, instance_text, INSTANCE_INVALID))
        return None
    return RowKey(record, event, instrument, int(instance_text)), False


def _context_problem(project: ProjectModel, key: RowKey, meta: ImportColumn) -> str | None:
    form = meta.form
    if form not in project.forms_in_event(key.event):
        return NOT_IN_EVENT.format(field=meta.field_name, event=project.event_label(key.event))
    if key.instrument and form != key.instrument:
        return OTHER_INSTRUMENT.format(instrument=key.instrument)
    if not key.instrument and project.is_repeating_form(key.event, form):
        return NEEDS_REPEAT.format(field=meta.field_name, form=form)
    return None


def _check_values(
    project: ProjectModel,
    key: RowKey,
    row: dict[str, str],
    date_format: str,
    lines: list[str],
    warnings: list[str],
) -> dict[str, str]:
    values: dict[str, str] = {}
    for column, raw in row.items():
        meta = project.import_columns.get(column)
        if meta is None or column == project.record_id_field:
            continue  # key / ignored columns
        if raw == "":
            values[column] = ""
            continue
        problem = _context_problem(project, key, meta)
        if problem:
            lines.append(csv_line(key.record, column, raw, problem))
            continue
        if meta.is_complete:
            verdict = check_complete(meta.form, raw)
            value = raw
        else:
            spec = project.fields_by_name[meta.field_name]
            value = convert_date(raw, validation_type(spec), date_format)
            verdict = check_value(spec, value, meta.choice)
        if verdict.error:
            lines.append(csv_line(key.record, column, raw, verdict.error))
        if verdict.warning:
            warnings.append(csv_line(key.record, column, raw, verdict.warning))
        values[column] = value
    return values


def plan_import(project: ProjectModel, data: Any, *, date_format: str = "YMD") -> ImportPlan:
    """Validate a whole import; raise ImportRejected with REDCap's message on any problem."""
    rows = _rows_as_text(data)
    _check_columns(project, rows)
    id_field = project.record_id_field
    plan = ImportPlan()
    lines: list[str] = []
    for row in rows:
        record = row.get(id_field, "")
        if record == "":
            lines.append(csv_line("", id_field, "", BLANK_RECORD))
            continue
        id_verdict = check_value(project.fields_by_name[id_field], record)
        if id_verdict.error:
            lines.append(csv_line(record, id_field, record, id_verdict.error))
        resolved = _row_key(project, record, row, lines)
        dag = row.get(DAG) if DAG in row else None
        if dag and dag not in {d.unique_group_name for d in project.dags}:
            lines.append(csv_line(record, DAG, dag, BAD_DAG))
        if resolved is None:
            continue
        key, new_instance = resolved
        values = _check_values(project, key, row, date_format, lines, plan.warnings)
        plan.rows.append(PlannedRow(key, values, dag, new_instance))
        if record not in plan.records:
            plan.records.append(record)
    if lines:
        raise ImportRejected("\n".join(lines))
    return plan
