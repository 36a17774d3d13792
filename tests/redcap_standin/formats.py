"""Request parameters in, REDCap-shaped replies out (JSON / CSV bodies, error bodies)."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape


class ApiError(Exception):
    """An API-level failure REDCap answers with a status and an error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str
    rows: int = 0
    warnings: list[str] = field(default_factory=list)


class Params:
    """The form-encoded POST body. Lists come as fields[0], fields[1], ... (or fields[])."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs
        self.values: dict[str, str] = {}
        for key, value in pairs:
            self.values[key] = value

    def get(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def flag(self, name: str) -> bool:
        return self.get(name).strip().lower() in ("1", "true", "y", "yes")

    def listed(self, name: str) -> list[str]:
        indexed: list[tuple[int, str]] = []
        bare: list[str] = []
        for key, value in self.pairs:
            match = re.fullmatch(rf"{re.escape(name)}\[(\d*)\]", key)
            if match and match.group(1):
                indexed.append((int(match.group(1)), value))
            elif match:
                bare.append(value)
            elif key == name and value:
                bare.extend(v.strip() for v in value.split(",") if v.strip())
        return [v for _, v in sorted(indexed)] + bare


def error_format(params: Params) -> str:
    """REDCap: returnFormat, else format, else xml decides how errors are written."""
    fmt = (params.get("returnFormat") or params.get("format") or "xml").lower()
    return fmt if fmt in ("json", "csv", "xml") else "xml"


def error_reply(status: int, message: str, fmt: str) -> Reply:
    if fmt == "json":
        return Reply(status, json.dumps({"error": message}).encode(), "application/json")
    if fmt == "csv":
        return Reply(status, f"ERROR: {message}".encode(), "text/csv; charset=utf-8")
    body = (
        '<?xml version="1.0" encoding="UTF-8" ?>\n'
        f"<hash>\n  <error>{escape(message)}</error>\n</hash>"
    )
    return Reply(status, body.encode(), "text/xml; charset=utf-8")


def to_csv(data: Any) -> str:
    rows: list[dict[str, Any]] = [data] if isinstance(data, dict) else list(data)
    if not rows:
        return "\n"
    header = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def data_reply(data: Any, fmt: str) -> Reply:
    """A successful export in the requested `format` (json or csv)."""
    rows = len(data) if isinstance(data, list) else 1
    if fmt == "json":
        return Reply(200, json.dumps(data).encode(), "application/json; charset=utf-8", rows)
    if fmt == "csv":
        return Reply(200, to_csv(data).encode(), "text/csv; charset=utf-8", rows)
    raise ApiError(400, f"The REDCap stand-in only answers format json or csv, not {fmt!r}")


def text_reply(text: str, rows: int = 0) -> Reply:
    return Reply(200, text.encode(), "text/html; charset=UTF-8", rows)
