"""content=record: flat export, import (all-or-nothing) and delete."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import datetime
from typing import Any

from .formats import ApiError, Params, Reply, data_reply, text_reply
from .project import ProjectModel, Token
from .store import DAG, EVENT, INSTANCE, INSTRUMENT, RecordStore, RowKey, StoredRow
from .validation import ImportPlan, ImportRejected, plan_import

NO_IMPORT_RIGHT = "You do not have API Import/Update privileges"
NO_DELETE_RIGHT = "You do not have Delete Record privileges"
# REDCap names the parameter bare: "... in the parameter fields are not valid: 'a', 'b'".
NOT_VALID_PARAM = "The following values in the parameter {} are not valid: {}"
MISSING_RECORDS = (
    "One or more of the records provided cannot be deleted because they do not exist in the "
    "project. The following records do not exist: {}"
)


def invalid_param(param: str, values: list[str]) -> ApiError:
    return ApiError(400, NOT_VALID_PARAM.format(param, ", ".join(f"'{v}'" for v in values)))


# ----- export -----------------------------------------------------------------------------------
def _selected_fields(project: ProjectModel, params: Params) -> set[str]:
    fields, forms = params.listed("fields"), params.listed("forms")
    by_column = {c: m.field_name for c, m in project.import_columns.items() if m.choice}
    known = set(project.import_columns) | set(project.fields_by_name)
    bad = [f for f in fields if f not in known]
    if bad:
        raise invalid_param("fields", bad)
    bad = [f for f in forms if f not in project.form_names]
    if bad:
        raise invalid_param("forms", bad)
    if not fields and not forms:
        return set(project.fields_by_name) | {f"{form}_complete" for form in project.form_names}
    selected = {by_column.get(f, f) for f in fields}
    for form in forms:
        selected |= {row["field_name"] for row in project.fields_of_form(form)}
        selected.add(f"{form}_complete")
    return selected


def _time_window(params: Params) -> tuple[float | None, float | None]:
    def parse(name: str) -> float | None:
        text = params.get(name).strip()
        if not text:
            return None
        for pattern in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
            try:
                return datetime.strptime(text, pattern).timestamp()
            except ValueError:
                continue
        raise ApiError(400, f"The value of the parameter {name} is not a valid date/time")

    return parse("dateRangeBegin"), parse("dateRangeEnd")


def _cell(
    project: ProjectModel, row: StoredRow, column: str, forms_here: set[str], gray: str
) -> str:
    meta = project.import_columns[column]
    if meta.form not in forms_here:
        return ""
    value = row.values.get(column)
    if value is not None:
        return value
    if meta.choice is not None:
        return "0"
    return gray if meta.is_complete else ""


def export_records(project: ProjectModel, store: RecordStore, params: Params) -> Reply:
    if params.get("type", "flat") != "flat":
        raise ApiError(400, "The REDCap stand-in only exports type=flat")
    if params.get("rawOrLabel", "raw") != "raw":
        raise ApiError(400, "The REDCap stand-in only exports rawOrLabel=raw")
    if params.get("filterLogic").strip():
        raise ApiError(400, "The REDCap stand-in does not evaluate filterLogic")
    selected = _selected_fields(project, params)
    columns = project.export_columns(selected)
    keys: list[str] = []
    if project.record_id_field in selected:
        keys.append(project.record_id_field)
        keys += [EVENT] if project.is_longitudinal else []
        keys += [INSTRUMENT, INSTANCE] if project.has_repeating else []
        keys += [DAG] if params.flag("exportDataAccessGroups") else []
    events = params.listed("events") if project.is_longitudinal else []
    bad = [e for e in events if e not in project.event_names]
    if bad:
        raise invalid_param("events", bad)
    wanted = set(params.listed("records"))
    begin, end = _time_window(params)
    gray = "" if params.flag("exportBlankForGrayFormStatus") else "0"
    out: list[dict[str, Any]] = []
    with store.lock:
        for row in store.sorted_rows():
            key = row.key
            if (wanted and key.record not in wanted) or (events and key.event not in events):
                continue
            stamp = store.modified.get(key.record, 0.0)
            if (begin is not None and stamp < begin) or (end is not None and stamp > end):
                continue
            forms_here = set(project.forms_of_context(key.event, key.instrument))
            has_data = any(row.values.get(c, "") != "" for c in columns)
            applies = any(project.import_columns[c].form in forms_here for c in columns)
            if columns and not has_data and not (key.is_base and applies):
                continue
            flat: dict[str, Any] = {}
            for name in keys:
                flat[name] = {
                    project.record_id_field: key.record,
                    EVENT: key.event,
                    INSTRUMENT: key.instrument,
                    INSTANCE: key.instance if key.instance is not None else "",
                    DAG: store.dag_of.get(key.record, ""),
                }[name]
            for column in columns:
                flat[column] = _cell(project, row, column, forms_here, gray)
            out.append(flat)
    return data_reply(out, params.get("format", "xml"))


# ----- import -----------------------------------------------------------------------------------
def _parse_data(params: Params) -> Any:
    text, fmt = params.get("data"), params.get("format", "xml")
    if fmt == "json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ApiError(400, "The data being imported is not in valid JSON format") from exc
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(text)))
    raise ApiError(400, f"The REDCap stand-in only imports format json or csv, not {fmt!r}")


def _auto_number(project: ProjectModel, store: RecordStore, data: Any) -> dict[str, str]:
    """forceAutoNumber: give every distinct incoming record name the next free number."""
    if not isinstance(data, list):
        return {}
    id_field = project.record_id_field
    numbers = [int(r) for r in store.record_ids() if r.isdigit()]
    next_id = max(numbers, default=0) + 1
    mapping: dict[str, str] = {}
    for row in data:
        if isinstance(row, dict):
            old = str(row.get(id_field, ""))
            if old not in mapping:
                mapping[old] = str(next_id)
                next_id += 1
            row[id_field] = mapping[old]
    return mapping


def apply_plan(
    project: ProjectModel, store: RecordStore, plan: ImportPlan, overwrite: bool
) -> None:
    for planned in plan.rows:
        key = planned.key
        if planned.new_instance:
            key = replace(key, instance=store.next_instance(key.record, key.event, key.instrument))
        if not key.is_base and not project.is_repeating_event(key.event):
            base = RowKey(key.record, key.event)
            if base not in store.rows:
                store.upsert(base, {}, overwrite=False)
        values = dict(planned.values)
        stored = store.rows[key].values if key in store.rows else {}
        for column, value in planned.values.items():
            meta = project.import_columns[column]
            status = f"{meta.form}_complete"
            if value and not meta.is_complete and not values.get(status) and status not in stored:
                values[status] = "0"  # REDCap marks a form Incomplete once it holds data
        store.upsert(key, values, overwrite)
        if planned.dag is not None and (planned.dag or overwrite):
            store.set_dag(key.record, planned.dag)


def import_records(
    project: ProjectModel, store: RecordStore, params: Params, token: Token
) -> Reply:
    if not token.can_import:
        raise ApiError(403, NO_IMPORT_RIGHT)
    if params.get("type", "flat") != "flat":
        raise ApiError(400, "The REDCap stand-in only imports type=flat")
    data = _parse_data(params)
    overwrite = params.get("overwriteBehavior", "normal") == "overwrite"
    with store.lock:
        mapping = _auto_number(project, store, data) if params.flag("forceAutoNumber") else {}
        try:
            plan = plan_import(project, data, date_format=params.get("dateFormat", "YMD"))
        except ImportRejected as exc:
            raise ApiError(400, exc.message) from exc
        apply_plan(project, store, plan, overwrite)
        store.persist()
    reply = _import_answer(params, plan, mapping, rows=len(data))
    reply.warnings = plan.warnings
    return reply


def _import_answer(
    params: Params, plan: ImportPlan, mapping: dict[str, str], *, rows: int
) -> Reply:
    """returnContent: count -> {"count": records}; ids / auto_ids -> list; nothing -> empty."""
    content = params.get("returnContent", "count")
    answer: Any
    if content == "nothing":
        return text_reply("", rows)
    if content == "ids":
        answer = list(plan.records)
    elif content == "auto_ids":
        old_of = {new: old for old, new in mapping.items()}
        answer = [f"{r},{old_of.get(r, r)}" for r in plan.records]
    else:
        answer = {"count": len(plan.records)}
    if (params.get("returnFormat") or "json") == "csv":
        text = "\n".join(answer) if isinstance(answer, list) else str(answer["count"])
        return text_reply(text, rows)
    return Reply(200, json.dumps(answer).encode(), "application/json", rows)


# ----- delete -----------------------------------------------------------------------------------
def delete_records(
    project: ProjectModel, store: RecordStore, params: Params, token: Token
) -> Reply:
    if not token.can_import:
        raise ApiError(403, NO_IMPORT_RIGHT)
    if not token.can_delete:
        raise ApiError(403, NO_DELETE_RIGHT)
    records = list(dict.fromkeys(params.listed("records")))
    if not records:
        raise ApiError(400, "No records were provided in the records parameter")
    instrument = params.get("instrument") or None
    event = params.get("event") or None
    instance_text = params.get("repeat_instance")
    if instrument is not None and instrument not in project.form_names:
        raise invalid_param("instrument", [instrument])
    if event is not None and event not in project.event_names:
        raise invalid_param("event", [event])
    if instrument and project.is_longitudinal and event is None:
        raise ApiError(400, "The event parameter is required when instrument is provided")
    arm = params.get("arm")
    with store.lock:
        missing = [r for r in records if r not in store.record_ids()]
        if missing:
            raise ApiError(400, MISSING_RECORDS.format(", ".join(missing)))
        for record in records:
            if instrument or event or instance_text:
                store.delete_where(
                    record,
                    event=event,
                    instrument=instrument,
                    instance=int(instance_text) if instance_text else None,
                )
            elif arm:
                for e in project.events:
                    if str(e.arm_num) == arm:
                        store.delete_where(
                            record, event=e.unique_event_name, instrument=None, instance=None
                        )
            else:
                store.delete_record(record)
        store.persist()
    return Reply(200, json.dumps(len(records)).encode(), "application/json", len(records))
