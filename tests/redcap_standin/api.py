"""The /api/ endpoint: token check and routing on `content` (and `action`)."""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable
from typing import Any

from .fields import NO_DATA_TYPES, choices, export_names
from .formats import ApiError, Params, Reply, data_reply, error_format, error_reply, text_reply
from .project import ProjectModel, Token
from .records import delete_records, export_records, import_records, invalid_param
from .store import RecordStore

NO_PERMISSION = "You do not have permissions to use the API"


class Api:
    def __init__(self, project: ProjectModel, store: RecordStore) -> None:
        self.project = project
        self.store = store
        self.exports: dict[str, Callable[[Params], Any]] = {
            "project": lambda p: self.project_info(),
            "metadata": self.metadata,
            "exportFieldNames": self.field_names,
            "instrument": lambda p: [
                {"instrument_name": f, "instrument_label": project.form_label(f)}
                for f in project.form_names
            ],
            "arm": self.arms,
            "event": self.events,
            "formEventMapping": self.form_event_mapping,
            "repeatingFormsEvents": lambda p: self.repeating(),
            "dag": lambda p: [
                {
                    "data_access_group_name": d.data_access_group_name,
                    "unique_group_name": d.unique_group_name,
                    "data_access_group_id": d.data_access_group_id,
                }
                for d in project.dags
            ],
        }

    def handle(self, params: Params) -> Reply:
        try:
            return self._route(params)
        except ApiError as exc:
            return error_reply(exc.status, exc.message, error_format(params))
        except Exception as exc:  # a stand-in bug: answer loudly rather than drop the line
            traceback.print_exc()
            message = f"REDCap stand-in internal error: {exc!r}"
            return error_reply(500, message, error_format(params))

    def _route(self, params: Params) -> Reply:
        token = self._token(params.get("token"))
        content, action = params.get("content"), params.get("action", "export")
        if content == "version":
            return text_reply(self.project.redcap_version)
        if content == "record":
            if action == "delete":
                return delete_records(self.project, self.store, params, token)
            if "data" in params:
                return import_records(self.project, self.store, params, token)
            return export_records(self.project, self.store, params)
        if content == "generateNextRecordName":
            numbers = [int(r) for r in self.store.record_ids() if r.isdigit()]
            return text_reply(str(max(numbers, default=0) + 1))
        if content in self.exports:
            if "data" in params or action not in ("", "export"):
                raise ApiError(400, f"The REDCap stand-in cannot import or change {content}")
            return data_reply(self.exports[content](params), params.get("format", "xml"))
        raise ApiError(400, 'The value of the parameter "content" is not valid')

    def _token(self, value: str) -> Token:
        token = self.project.token(value) if re.fullmatch(r"[0-9A-Fa-f]{32}", value) else None
        if token is None:
            raise ApiError(403, NO_PERMISSION)
        return token

    # ----- project-level exports ---------------------------------------------------------------
    def project_info(self) -> dict[str, Any]:
        project = self.project
        info: dict[str, Any] = {
            "project_id": project.project_id,
            "project_title": project.project_title,
            "creation_time": "2024-01-15 09:30:00",
            "production_time": "2024-02-01 10:00:00" if project.in_production else "",
            "in_production": int(project.in_production),
            "project_language": "English",
            "purpose": 2,
            "purpose_other": "",
            "project_notes": "",
            "custom_record_label": "",
            "secondary_unique_field": "",
            "is_longitudinal": int(project.is_longitudinal),
            "has_repeating_instruments_or_events": int(project.has_repeating),
            "surveys_enabled": 0,
            "scheduling_enabled": 0,
            "record_autonumbering_enabled": 0,
            "randomization_enabled": 0,
            "ddp_enabled": 0,
            "project_irb_number": "",
            "project_grant_number": "",
            "project_pi_firstname": "",
            "project_pi_lastname": "",
            "display_today_now_button": 1,
            "missing_data_codes": "",
            "external_modules": "",
            "bypass_branching_erase_field_prompt": 0,
        }
        info.update(project.extra_info)
        return info

    def metadata(self, params: Params) -> list[dict[str, str]]:
        fields, forms = params.listed("fields"), params.listed("forms")
        bad = [f for f in fields if f not in self.project.fields_by_name]
        if bad:
            raise invalid_param("fields", bad)
        rows = self.project.metadata
        if fields or forms:
            rows = [r for r in rows if r["field_name"] in fields or r["form_name"] in forms]
        return [dict(r) for r in rows]

    def field_names(self, params: Params) -> list[dict[str, str]]:
        """REDCap's export names: one row per checkbox choice, each form's `<form>_complete`
        after its fields; descriptive fields (no data) and file-upload fields left out."""
        wanted = params.get("field")
        project = self.project
        known = set(project.fields_by_name) | {f"{form}_complete" for form in project.form_names}
        if wanted and wanted not in known:
            raise ApiError(400, f"The field '{wanted}' does not exist in the project")
        out: list[dict[str, str]] = []
        for form in project.form_names:
            for row in project.fields_of_form(form):
                if row["field_type"] in NO_DATA_TYPES | {"file"}:
                    continue
                codes = [c for c, _ in choices(row)] if row["field_type"] == "checkbox" else [""]
                for code, column in zip(codes, export_names(row), strict=True):
                    out.append(_field_name(row["field_name"], code, column))
            complete = f"{form}_complete"
            out.append(_field_name(complete, "", complete))
        return [n for n in out if not wanted or n["original_field_name"] == wanted]

    def _require_longitudinal(self, what: str) -> None:
        if not self.project.is_longitudinal:
            raise ApiError(400, f"You cannot export {what} for classic projects")

    def _arm_filter(self, params: Params) -> set[int]:
        return {int(a) for a in params.listed("arms") if a.isdigit()}

    def arms(self, params: Params) -> list[dict[str, Any]]:
        self._require_longitudinal("arms")
        wanted = self._arm_filter(params)
        return [
            {"arm_num": a.arm_num, "name": a.name}
            for a in self.project.arms
            if not wanted or a.arm_num in wanted
        ]

    def events(self, params: Params) -> list[dict[str, Any]]:
        self._require_longitudinal("events")
        wanted = self._arm_filter(params)
        return [
            {
                "event_name": e.event_name,
                "arm_num": e.arm_num,
                "unique_event_name": e.unique_event_name,
                "custom_event_label": e.custom_event_label,
                "event_id": e.event_id,
                "days_offset": e.days_offset,
                "offset_min": 0,
                "offset_max": 0,
            }
            for e in self.project.events
            if not wanted or e.arm_num in wanted
        ]

    def form_event_mapping(self, params: Params) -> list[dict[str, Any]]:
        self._require_longitudinal("form/event mappings")
        wanted = self._arm_filter(params)
        out: list[dict[str, Any]] = []
        for mapping in self.project.form_event_mapping:
            event = self.project.event(mapping.unique_event_name)
            arm = event.arm_num if event else 1
            if not wanted or arm in wanted:
                out.append(
                    {
                        "arm_num": arm,
                        "unique_event_name": mapping.unique_event_name,
                        "form": mapping.form,
                    }
                )
        return out

    def repeating(self) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        for r in self.project.repeating:
            row = {"form_name": r.form_name, "custom_form_label": r.custom_form_label}
            if self.project.is_longitudinal:
                row = {"event_name": r.event_name, **row}
            out.append(row)
        return out


def _field_name(original: str, choice: str, export: str) -> dict[str, str]:
    return {"original_field_name": original, "choice_value": choice, "export_field_name": export}
