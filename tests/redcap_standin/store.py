"""Stored record data: one row per (record, event, repeat instrument, repeat instance)."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .project import ProjectModel

EVENT = "redcap_event_name"
INSTRUMENT = "redcap_repeat_instrument"
INSTANCE = "redcap_repeat_instance"
DAG = "redcap_data_access_group"


@dataclass(frozen=True, order=True)
class RowKey:
    record: str
    event: str = ""  # "" in classic projects
    instrument: str = ""  # "" = not a repeating instrument
    instance: int | None = None  # None = not repeating at all

    @property
    def is_base(self) -> bool:
        return self.instance is None


@dataclass
class StoredRow:
    key: RowKey
    values: dict[str, str] = field(default_factory=dict)


def natural_key(name: str) -> tuple[tuple[int, int, str], ...]:
    """REDCap lists records numerically where the names are numbers: 2 before 10."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.split(r"(\d+)", name)
        if part
    )


class RecordStore:
    """Thread-safe row store; persists to `state_file` (atomically) after every change."""

    def __init__(self, project: ProjectModel, state_file: Path | None = None) -> None:
        self.project = project
        self.state_file = state_file
        self.lock = threading.RLock()
        self.rows: dict[RowKey, StoredRow] = {}
        self.dag_of: dict[str, str] = {}
        self.modified: dict[str, float] = {}
        if state_file is not None and state_file.exists():
            self.load(json.loads(state_file.read_text(encoding="utf-8")))
        else:
            self.load({"records": project.records})

    # ----- reading -----------------------------------------------------------------------------
    def record_ids(self) -> list[str]:
        with self.lock:
            return sorted({k.record for k in self.rows}, key=natural_key)

    def sort_key(self, key: RowKey) -> tuple[Any, ...]:
        events = self.project.event_names
        forms = self.project.form_names
        return (
            natural_key(key.record),
            events.index(key.event) if key.event in events else -1,
            forms.index(key.instrument) + 1 if key.instrument in forms else 0,
            key.instance or 0,
        )

    def sorted_rows(self) -> list[StoredRow]:
        with self.lock:
            return [self.rows[k] for k in sorted(self.rows, key=self.sort_key)]

    def next_instance(self, record: str, event: str, instrument: str) -> int:
        with self.lock:
            taken = [
                k.instance or 0
                for k in self.rows
                if (k.record, k.event, k.instrument) == (record, event, instrument)
            ]
            return max(taken, default=0) + 1

    def flat_rows(self) -> list[dict[str, Any]]:
        """Stored rows with their key columns (the `records` accessor and the state file)."""
        project = self.project
        out: list[dict[str, Any]] = []
        for row in self.sorted_rows():
            flat: dict[str, Any] = {project.record_id_field: row.key.record}
            if project.is_longitudinal:
                flat[EVENT] = row.key.event
            if project.has_repeating:
                flat[INSTRUMENT] = row.key.instrument
                flat[INSTANCE] = row.key.instance if row.key.instance is not None else ""
            if self.dag_of.get(row.key.record):
                flat[DAG] = self.dag_of[row.key.record]
            flat.update(row.values)
            out.append(flat)
        return out

    # ----- writing -----------------------------------------------------------------------------
    def load(self, state: dict[str, Any]) -> None:
        """Replace everything with rows in `flat_rows()` form (trusted, not validated)."""
        id_field = self.project.record_id_field
        with self.lock:
            self.rows.clear()
            self.dag_of.clear()
            self.modified = {str(k): float(v) for k, v in state.get("modified", {}).items()}
            for flat in state.get("records", []):
                values = {str(k): str(v) for k, v in flat.items()}
                record = values.pop(id_field)
                instance = values.pop(INSTANCE, "")
                key = RowKey(
                    record,
                    values.pop(EVENT, ""),
                    values.pop(INSTRUMENT, ""),
                    int(instance) if instance else None,
                )
                dag = values.pop(DAG, "")
                if dag:
                    self.dag_of[record] = dag
                self.rows.setdefault(key, StoredRow(key)).values.update(values)
                self.modified.setdefault(record, time.time())

    def adopt(self, project: ProjectModel) -> None:
        """Another design of the same project: a classic project's rows move into the first
        event when it becomes longitudinal, as REDCap moves them; other rows stay as they are."""
        with self.lock:
            self.project = project
            for key in [k for k in self.rows if k.event == "" and project.is_longitudinal]:
                row = self.rows.pop(key)
                row.key = replace(key, event=project.first_event)
                self.rows[row.key] = row
            self.persist()

    def reset(self) -> None:
        with self.lock:
            self.load({"records": self.project.records})
            self.persist()

    def upsert(self, key: RowKey, values: dict[str, str], overwrite: bool) -> None:
        """Write one imported row: blanks erase under overwrite, are ignored otherwise."""
        with self.lock:
            row = self.rows.setdefault(key, StoredRow(key))
            for column, value in values.items():
                if value != "":
                    row.values[column] = value
                elif overwrite:
                    row.values.pop(column, None)
            self.modified[key.record] = time.time()

    def set_dag(self, record: str, dag: str | None) -> None:
        with self.lock:
            if dag:
                self.dag_of[record] = dag
            elif dag == "":
                self.dag_of.pop(record, None)

    def delete_record(self, record: str) -> None:
        with self.lock:
            for key in [k for k in self.rows if k.record == record]:
                del self.rows[key]
            self.dag_of.pop(record, None)
            self.modified.pop(record, None)

    def delete_where(
        self,
        record: str,
        *,
        event: str | None,
        instrument: str | None,
        instance: int | None,
    ) -> None:
        """Partial delete: an event's rows, or one instrument's fields (optionally one instance)."""
        with self.lock:
            for key in [k for k in self.rows if k.record == record]:
                if event is not None and key.event != event:
                    continue
                if instance is not None and key.instance != instance:
                    continue
                if instrument is None:
                    del self.rows[key]
                    continue
                if key.instrument not in ("", instrument):
                    continue
                row = self.rows[key]
                for column, meta in self.project.import_columns.items():
                    if meta.form == instrument:
                        row.values.pop(column, None)
                if not key.is_base and not row.values:
                    del self.rows[key]
            if not any(k.record == record for k in self.rows):
                self.dag_of.pop(record, None)
            self.modified[record] = time.time()

    def persist(self) -> None:
        if self.state_file is None:
            return
        with self.lock:
            state = {"records": self.flat_rows(), "modified": self.modified}
            tmp = self.state_file.with_name(self.state_file.name + ".tmp")
            with tmp.open("w", encoding="utf-8") as handle:
                json.dump(state, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.state_file)
