"""The hash chain: what each entry's SHA-256 covers, and the walk that checks every link.

hash(n) = SHA-256(hash(n-1) || seq(n) as 8 bytes big-endian || payload(n)), hash(0) = 32 zero
bytes, where payload is the canonical JSON (sorted keys, no spaces, UTF-8) of every other column
of the entry. The insert computes it in PostgreSQL (server.audit.service); verify() recomputes
it here from the stored columns, so an edited column, a deleted entry or a re-pointed head all
break a link. The hash is computed from what PostgreSQL stores back, so every value in the
payload must read back exactly as written: text, UUIDs, a timestamp in microseconds, and a
summary of strings, integers, booleans, lists and objects (no floats).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

GENESIS = bytes(32)
# The columns the payload covers, in the order the insert's parameters take them.
PAYLOAD_FIELDS = (
    "occurred_at",
    "actor_id",
    "action",
    "object_type",
    "object_id",
    "study_id",
    "site_id",
    "request_id",
    "client_ip",
    "summary",
)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def payload(entry: Mapping[Any, Any]) -> bytes:
    return orjson.dumps(
        {name: _plain(entry[name]) for name in PAYLOAD_FIELDS}, option=orjson.OPT_SORT_KEYS
    )


def link(previous: bytes, seq: int, entry_payload: bytes) -> bytes:
    """The same expression as the insert's `sha256(hash || int8send(seq) || payload)`."""
    return hashlib.sha256(previous + seq.to_bytes(8, "big", signed=True) + entry_payload).digest()


@dataclass(frozen=True)
class Verdict:
    ok: bool
    entries: int
    head_seq: int
    broken_seq: int | None = None
    reason: str = ""

    def describe(self) -> str:
        if self.ok:
            return f"audit chain intact: {self.entries} entries, head at seq {self.head_seq}"
        return f"audit chain broken at seq {self.broken_seq}: {self.reason}"


class ChainWalk:
    """Feed entries in seq order; the first broken link is kept, the rest is not looked at."""

    def __init__(self) -> None:
        self.previous = GENESIS
        self.expected_seq = 1
        self.entries = 0
        self.broken: Verdict | None = None

    def feed(self, entry: Mapping[Any, Any]) -> bool:
        """False once the chain is broken (stop walking)."""
        seq = int(entry["seq"])
        if seq != self.expected_seq:
            self.broken = Verdict(
                ok=False,
                entries=self.entries,
                head_seq=self.expected_seq - 1,
                broken_seq=self.expected_seq,
                reason=f"entry missing (deleted?): seq {self.expected_seq - 1} is followed "
                f"by seq {seq}",
            )
            return False
        expected = link(self.previous, seq, payload(entry))
        if bytes(entry["hash"]) != expected:
            self.broken = Verdict(
                ok=False,
                entries=self.entries,
                head_seq=seq - 1,
                broken_seq=seq,
                reason="the stored hash does not match the entry's contents (edited?)",
            )
            return False
        self.previous, self.expected_seq, self.entries = expected, seq + 1, self.entries + 1
        return True

    def finish(self, head_seq: int, head_hash: bytes) -> Verdict:
        if self.broken is not None:
            return self.broken
        if head_seq != self.expected_seq - 1 or bytes(head_hash) != self.previous:
            return Verdict(
                ok=False,
                entries=self.entries,
                head_seq=head_seq,
                broken_seq=self.expected_seq,
                reason=f"the chain's head is at seq {head_seq} but the entries end at seq "
                f"{self.expected_seq - 1} (the last entries deleted, or the head edited?)",
            )
        return Verdict(ok=True, entries=self.entries, head_seq=head_seq)
