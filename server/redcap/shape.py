"""Before a batch goes to REDCap: does the project still have the shape its mapping was saved for?

REDCap takes a longitudinal row that names no event and files it under the first event, with a
200 and the count: a mapping saved while the project was classic, sent after someone made it
longitudinal, would write where nobody meant, and nobody would be told. So every batch is
checked first against the project as REDCap reports it (longitudinal or not, its events, its
repeating instruments, its fields' forms and types), by the rules the mapping's save was
checked with (mapping.validate, the sources aside). A misfit fails the batch's submissions
with the mapping error, before any row is sent.

Cost: the structure takes 2 to 4 calls (project, metadata, formEventMapping if longitudinal,
repeatingFormsEvents if repeating); it is kept per connection in this process for
SHAPE_TTL_SECONDS, so a backlog's batches cost none. A mapping saved again, or a connection
edited (another URL or token), since it was fetched is checked afresh; a misfit is never kept,
so the first batch after the project is put right looks again.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from server.redcap import mapping as mapping_rules
from server.redcap.client import RedcapClient
from server.redcap.structure import ProjectStructure, fetch_structure

SHAPE_TTL_SECONDS = 60.0
MISFIT = (
    "The field mapping no longer fits the REDCap project: {}. Save the mapping again for the "
    "project as it is now, then resync."
)


@dataclass(frozen=True)
class _Seen:
    version: str  # Plan.mapping_version when fetched
    structure: ProjectStructure
    at: float  # time.monotonic()


_seen: dict[uuid.UUID, _Seen] = {}


def _kept(connection_id: uuid.UUID, version: str) -> _Seen | None:
    seen = _seen.get(connection_id)
    if seen is None or seen.version != version or time.monotonic() - seen.at > SHAPE_TTL_SECONDS:
        return None
    return seen


async def fetch(client: RedcapClient, connection_id: uuid.UUID, version: str) -> ProjectStructure:
    """The project's structure as kept, or asked for now (and kept until misfit judges it). A
    sender asks while it picks its first batch: the batch's own check then finds it kept."""
    seen = _kept(connection_id, version)
    if seen is None:
        structure = await fetch_structure(client, hints=False)
        seen = _seen[connection_id] = _Seen(version, structure, time.monotonic())
    return seen.structure


async def misfit(
    client: RedcapClient, connection_id: uuid.UUID, version: str, document: dict[str, Any]
) -> str | None:
    """The mapping error for this connection's batch, or None if the mapping fits the project.
    `version` names the mapping and connection as the sync read them (Plan.mapping_version).
    Raises what the client raises (TransientRedcapError: the batch waits, as for its import)."""
    problems = mapping_rules.misfits(document, await fetch(client, connection_id, version))
    if problems:
        _seen.pop(connection_id, None)
        return MISFIT.format("; ".join(problems))
    return None
