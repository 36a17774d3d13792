"""A sync through one connection, as plain values: what routing decides (server.redcap.routing)
and the batch (server.redcap.batch, .candidates) and the sender (server.redcap.sync) work by."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any


@dataclass
class Plan:
    """A sync through one connection, as plain values (they outlive the session)."""

    connection_id: uuid.UUID
    study_id: uuid.UUID
    site_id: uuid.UUID | None
    batch_size: int
    document: dict[str, Any]
    # The mapping and connection as read (saved / edited when): the project's shape is checked
    # afresh for a new one (server.redcap.shape).
    mapping_version: str = ""
