"""Reading REDCap's refusal of an import: which rows, which field, in REDCap's own words.

REDCap rejects the whole call when anything is wrong, with one of (as of REDCap 14):

- ``The following fields were not found in the project as real data fields: a, b``
- ``The following values of redcap_event_name are invalid: visit_11_arm_1``
- one CSV line per problem, ``"record","field","value","message"``, joined by newlines
  (invalid values, and misuse of redcap_repeat_instrument / redcap_repeat_instance).

A line names a record, not a row: a row is blamed when it has that record, and that value in
that field; if no row of the record matches the value, every row of the record is blamed.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_UNKNOWN_FIELDS = re.compile(
    r"following fields were not found in the project as real data fields:\s*(.+)",
    re.IGNORECASE | re.DOTALL,
)
_BAD_EVENTS = re.compile(
    r"following values of redcap_event_name are invalid:\s*(.+)", re.IGNORECASE | re.DOTALL
)
EVENT = "redcap_event_name"


@dataclass(frozen=True)
class Blame:
    message: str  # REDCap's message(s) about this row
    field: str | None  # the first field REDCap named


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.replace("\n", ",").split(",") if n.strip()]


def _lines(message: str) -> list[list[str]]:
    out: list[list[str]] = []
    for line in message.splitlines():
        if not line.strip():
            continue
        cells = next(csv.reader([line]), [])
        if len(cells) >= 4:
            out.append([*cells[:3], ",".join(cells[3:]).strip()])
    return out


def blame_rows(
    message: str, rows: Sequence[dict[str, Any]], record_id_field: str
) -> dict[int, Blame]:
    """Row index -> what REDCap said about that row. Empty if the message names no row."""
    found = _UNKNOWN_FIELDS.search(message)
    if found:
        unknown = _names(found.group(1))
        return {
            i: Blame(message, hit[0])
            for i, row in enumerate(rows)
            if (hit := [name for name in unknown if name in row])
        }
    found = _BAD_EVENTS.search(message)
    if found:
        events = set(_names(found.group(1)))
        return {i: Blame(message, EVENT) for i, row in enumerate(rows) if row.get(EVENT) in events}
    said: dict[int, list[tuple[str, str]]] = {}
    for record, field, value, text in _lines(message):
        of_record = [i for i, row in enumerate(rows) if str(row.get(record_id_field)) == record]
        exact = [
            i
            for i in of_record
            if field == record_id_field or (field in rows[i] and _text(rows[i][field]) == value)
        ]
        for i in exact or of_record:
            said.setdefault(i, []).append((field, text))
    return {
        i: Blame("; ".join(dict.fromkeys(text for _, text in items)), items[0][0])
        for i, items in said.items()
    }


def _text(value: Any) -> str:
    if value is None:
        return ""
    return str(value)
