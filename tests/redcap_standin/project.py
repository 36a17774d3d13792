"""The project model: what a REDCap project holds besides its records' history."""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .fields import Field, checkbox_export_name, choices, export_names, normalize


def new_token() -> str:
    """A REDCap-style API token: 32 upper-case hex characters."""
    return secrets.token_hex(16).upper()


@dataclass(frozen=True)
class Token:
    token: str
    username: str = "api_user"
    can_import: bool = True
    can_delete: bool = True


@dataclass(frozen=True)
class Arm:
    arm_num: int
    name: str


@dataclass(frozen=True)
class Event:
    unique_event_name: str
    event_name: str
    arm_num: int = 1
    event_id: int = 0
    days_offset: int = 0
    custom_event_label: str = ""


@dataclass(frozen=True)
class FormEvent:
    unique_event_name: str
    form: str


@dataclass(frozen=True)
class Repeating:
    """A repeating instrument (form_name set) or a repeating event (form_name "")."""

    form_name: str
    event_name: str = ""
    custom_form_label: str = ""


@dataclass(frozen=True)
class Dag:
    data_access_group_name: str
    unique_group_name: str
    data_access_group_id: int = 0


@dataclass(frozen=True)
class ImportColumn:
    """What an importable column name stands for."""

    field_name: str
    form: str
    choice: str | None = None  # checkbox code for field___code columns
    is_complete: bool = False  # <form>_complete


@dataclass
class ProjectModel:
    """A REDCap project. `records` are the rows stored when the stand-in starts (or resets)."""

    project_title: str
    metadata: list[Field]
    tokens: list[Token]
    project_id: int = 1
    redcap_version: str = "14.5.10"
    in_production: bool = False
    arms: list[Arm] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    form_event_mapping: list[FormEvent] = field(default_factory=list)
    repeating: list[Repeating] = field(default_factory=list)
    dags: list[Dag] = field(default_factory=list)
    form_labels: dict[str, str] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    extra_info: dict[str, Any] = field(default_factory=dict)

    # ----- construction / serialisation -------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProjectModel:
        return cls(
            project_title=str(data["project_title"]),
            metadata=[normalize(row) for row in data["metadata"]],
            tokens=[Token(**t) for t in data["tokens"]],
            project_id=int(data.get("project_id", 1)),
            redcap_version=str(data.get("redcap_version", "14.5.10")),
            in_production=bool(data.get("in_production", False)),
            arms=[Arm(**a) for a in data.get("arms", [])],
            events=[Event(**e) for e in data.get("events", [])],
            form_event_mapping=[FormEvent(**m) for m in data.get("form_event_mapping", [])],
            repeating=[Repeating(**r) for r in data.get("repeating", [])],
            dags=[Dag(**d) for d in data.get("dags", [])],
            form_labels=dict(data.get("form_labels", {})),
            records=list(data.get("records", [])),
            extra_info=dict(data.get("extra_info", {})),
        )

    @classmethod
    def from_json_file(cls, path: str | Path) -> ProjectModel:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")

    # ----- tokens ------------------------------------------------------------------------------
    def token(self, value: str) -> Token | None:
        return next((t for t in self.tokens if t.token == value), None)

    @property
    def import_token(self) -> str:
        return next(t.token for t in self.tokens if t.can_import)

    @property
    def readonly_token(self) -> str:
        return next(t.token for t in self.tokens if not t.can_import)

    # ----- structure ---------------------------------------------------------------------------
    @property
    def is_longitudinal(self) -> bool:
        return bool(self.events)

    @property
    def has_repeating(self) -> bool:
        return bool(self.repeating)

    @property
    def record_id_field(self) -> str:
        return self.metadata[0]["field_name"]

    @cached_property
    def fields_by_name(self) -> dict[str, Field]:
        return {row["field_name"]: row for row in self.metadata}

    @cached_property
    def form_names(self) -> list[str]:
        return list(dict.fromkeys(row["form_name"] for row in self.metadata))

    def form_label(self, form: str) -> str:
        return self.form_labels.get(form, form.replace("_", " ").title())

    def fields_of_form(self, form: str) -> list[Field]:
        return [row for row in self.metadata if row["form_name"] == form]

    @cached_property
    def event_names(self) -> list[str]:
        return [e.unique_event_name for e in self.events]

    def event(self, unique_name: str) -> Event | None:
        return next((e for e in self.events if e.unique_event_name == unique_name), None)

    @property
    def first_event(self) -> str:
        """Where REDCap files a longitudinal row that names no event: the first event of the
        first arm ("" in a classic project)."""
        if not self.events:
            return ""
        first_arm = min(e.arm_num for e in self.events)
        return next(e.unique_event_name for e in self.events if e.arm_num == first_arm)

    def event_label(self, unique_name: str) -> str:
        """How REDCap names an event in its import errors: 'Month 6 (Arm 1: Arm 1)'."""
        event = self.event(unique_name)
        if event is None:
            return unique_name
        arm = next((a.name for a in self.arms if a.arm_num == event.arm_num), "")
        return f"{event.event_name} (Arm {event.arm_num}: {arm or f'Arm {event.arm_num}'})"

    def forms_in_event(self, event: str) -> list[str]:
        """Forms designated for an event ("" = classic project: every form)."""
        if not self.is_longitudinal:
            return list(self.form_names)
        designated = {m.form for m in self.form_event_mapping if m.unique_event_name == event}
        return [f for f in self.form_names if f in designated]

    def is_repeating_form(self, event: str, form: str) -> bool:
        return any(r.form_name == form and r.event_name == event for r in self.repeating if form)

    def is_repeating_event(self, event: str) -> bool:
        return bool(event) and any(
            r.form_name == "" and r.event_name == event for r in self.repeating
        )

    def forms_of_context(self, event: str, instrument: str) -> list[str]:
        """Forms whose fields hold data in a row of this (event, repeat instrument) context."""
        if instrument:
            return [instrument]
        return [f for f in self.forms_in_event(event) if not self.is_repeating_form(event, f)]

    @cached_property
    def import_columns(self) -> dict[str, ImportColumn]:
        """Every "real data field" column REDCap accepts in a record import."""
        columns: dict[str, ImportColumn] = {}
        for form in self.form_names:
            for row in self.fields_of_form(form):
                if row["field_type"] == "checkbox":
                    for code, _ in choices(row):
                        name = checkbox_export_name(row["field_name"], code)
                        columns[name] = ImportColumn(row["field_name"], form, choice=code)
                else:
                    for name in export_names(row):
                        columns[name] = ImportColumn(name, form)
            columns[f"{form}_complete"] = ImportColumn(f"{form}_complete", form, is_complete=True)
        return columns

    def export_columns(self, selected: set[str]) -> list[str]:
        """Data columns (no key columns) for the selected field / <form>_complete names."""
        columns: list[str] = []
        for form in self.form_names:
            for row in self.fields_of_form(form):
                if row["field_name"] in selected and row["field_name"] != self.record_id_field:
                    columns.extend(export_names(row))
            if f"{form}_complete" in selected:
                columns.append(f"{form}_complete")
        return columns
