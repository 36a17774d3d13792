"""A REDCap project's structure as far as a mapping needs it (fields, forms, events, what
repeats), read from REDCap's own API: what a mapping is checked against when saved
(server.redcap.mapping) and before a batch is sent (server.redcap.shape)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.redcap.client import RedcapClient


@dataclass
class ProjectStructure:
    """What REDCap says about a project, as far as a mapping needs it."""

    record_id_field: str
    is_longitudinal: bool
    metadata: dict[str, dict[str, Any]]
    export_field_names: list[str]
    forms: list[str]
    events: list[str] = field(default_factory=list)
    forms_in_event: dict[str, set[str]] = field(default_factory=dict)
    # (unique event name or "", form name or "" for a repeating event)
    repeating: set[tuple[str, str]] = field(default_factory=set)

    def is_repeating_form(self, event: str, form: str) -> bool:
        return (event, form) in self.repeating

    def repeating_forms(self, event: str) -> list[str]:
        return sorted(f for e, f in self.repeating if e == event and f)


async def fetch_structure(client: RedcapClient, *, hints: bool = True) -> ProjectStructure:
    """The project as REDCap reports it now. Without hints, no exportFieldNames call: those
    names only help someone correct a mapping (the sync's check has no one to show them to)."""
    info = await client.project_info()
    metadata = await client.metadata()
    names = await client.field_names() if hints else []
    longitudinal = bool(int(info.get("is_longitudinal") or 0))
    structure = ProjectStructure(
        record_id_field=str(metadata[0]["field_name"]) if metadata else "",
        is_longitudinal=longitudinal,
        metadata={str(row["field_name"]): row for row in metadata},
        export_field_names=[str(n["export_field_name"]) for n in names],
        forms=list(dict.fromkeys(str(row["form_name"]) for row in metadata)),
    )
    if longitudinal:
        for row in await client.form_event_mapping():
            event = str(row["unique_event_name"])
            if event not in structure.forms_in_event:
                structure.events.append(event)
            structure.forms_in_event.setdefault(event, set()).add(str(row["form"]))
    if int(info.get("has_repeating_instruments_or_events") or 0):
        for row in await client.repeating():
            event = str(row.get("event_name") or "") if longitudinal else ""
            structure.repeating.add((event, str(row.get("form_name") or "")))
    return structure
