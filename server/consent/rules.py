"""Which consent document is in force for a participant, and whether what they signed still
covers it: pure functions over a study's published documents and the participant's records.

- A document's track is (site or none, language or none). A participant's candidates are the
  tracks of their site or of no site, and of their language or of none; the most specific one
  with a published version wins: site and language, then site, then language, then neither.
  Its newest version is the one in force.
- Signing version k of that track covers the version in force unless a version after k, up to
  the one in force, requires re-consent. A signature on another track covers nothing here.
- A study with no published document at all has no gate (existing studies keep working). A
  study with documents, none of which fits the participant, has one that cannot be passed
  until a fitting document is published: consent first.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

Track = tuple[uuid.UUID | None, str | None]


@dataclass(frozen=True)
class PublishedDoc:
    id: uuid.UUID
    site_id: uuid.UUID | None
    language: str | None
    version: int
    requires_reconsent: bool

    @property
    def track(self) -> Track:
        return (self.site_id, self.language)


@dataclass(frozen=True)
class Signed:
    record_id: uuid.UUID
    document_id: uuid.UUID


@dataclass(frozen=True)
class Verdict:
    gated: bool  # the study has a published document
    in_force: PublishedDoc | None
    covered_by: uuid.UUID | None  # the record that covers the document in force

    @property
    def satisfied(self) -> bool:
        return not self.gated or self.covered_by is not None


def in_force(
    docs: Sequence[PublishedDoc], *, site_id: uuid.UUID, language: str | None
) -> PublishedDoc | None:
    for track in ((site_id, language), (site_id, None), (None, language), (None, None)):
        versions = [d for d in docs if d.track == track]
        if versions:
            return max(versions, key=lambda d: d.version)
    return None


def verdict(
    docs: Sequence[PublishedDoc],
    signed: Sequence[Signed],
    *,
    site_id: uuid.UUID,
    language: str | None,
) -> Verdict:
    if not docs:
        return Verdict(gated=False, in_force=None, covered_by=None)
    current = in_force(docs, site_id=site_id, language=language)
    if current is None:
        return Verdict(gated=True, in_force=None, covered_by=None)
    track = {d.id: d for d in docs if d.track == current.track}
    best: tuple[int, Signed] | None = None
    for signature in signed:  # signed: oldest first, so a later one of a version wins
        doc = track.get(signature.document_id)
        if doc is not None and (best is None or doc.version >= best[0]):
            best = (doc.version, signature)
    if best is None:
        return Verdict(gated=True, in_force=current, covered_by=None)
    asks_again = any(
        best[0] < d.version <= current.version and d.requires_reconsent for d in track.values()
    )
    return Verdict(
        gated=True, in_force=current, covered_by=None if asks_again else best[1].record_id
    )
