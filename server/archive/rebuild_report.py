"""What a study's rebuild did: how many archive objects it restored or found present, and
each one it skipped, by why (corrupt, missing reference data, conflicting rows).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Skipped:
    key: str
    reason: str


@dataclass
class RebuildReport:
    study_id: uuid.UUID
    study_code: str
    objects: int = 0
    restored: int = 0
    already_present: int = 0
    sessions_created: int = 0
    tasks_created: int = 0
    # Restored, but quarantined: its tasks do not fit its battery's modules.
    quarantined: int = 0
    # Failed verification: unreadable, wrong checksum, or not where its ids say it belongs.
    corrupt: list[Skipped] = field(default_factory=list)
    # Sound, but its participant, battery or module is not in this database.
    missing_reference: list[Skipped] = field(default_factory=list)
    # Sound, but the database holds different data under the same ids.
    conflicting: list[Skipped] = field(default_factory=list)

    @property
    def skipped(self) -> list[Skipped]:
        return [*self.corrupt, *self.missing_reference, *self.conflicting]

    @property
    def ok(self) -> bool:
        return not self.skipped

    def summary(self) -> str:
        return (
            f"study {self.study_code}: {self.objects} archived submissions, "
            f"{self.restored} restored ({self.quarantined} quarantined), "
            f"{self.already_present} already present, "
            f"{len(self.corrupt)} corrupt, {len(self.missing_reference)} missing reference data, "
            f"{len(self.conflicting)} conflicting"
        )

    def counts(self) -> dict[str, int]:
        return {
            "objects": self.objects,
            "restored": self.restored,
            "already_present": self.already_present,
            "sessions_created": self.sessions_created,
            "tasks_created": self.tasks_created,
            "quarantined": self.quarantined,
            "corrupt": len(self.corrupt),
            "missing_reference": len(self.missing_reference),
            "conflicting": len(self.conflicting),
        }
