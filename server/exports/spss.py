"""SPSS system files (.sav), written as a stream from the module's Parquet.

pyreadstat writes only whole pandas frames (a million trial rows peaked at 723 MB); this
writer holds one slice of cases at a time. The record layout is ReadStat's (what pyreadstat
and pandas.read_spss read with) and PSPP's "System File Format": the header, one variable
record per 8-byte slot, value labels (3 and 4), machine integer and float info (7.3, 7.4),
display (7.11), long names (7.13), very long strings (7.14), encoding "UTF-8" (7.20), the
64-bit case count (7.16), then the cases, uncompressed.

Numbers (integer, boolean, number) are doubles, missing system-missing; strings are space
padded (readers drop a value's trailing spaces with the padding, as SPSS does), missing
written as empty. Strings longer than 255 bytes are very long strings: segments of 252
bytes' worth (255 bytes of data in 256 each but the last). Values are cut at 32,767 bytes
(SPSS's longest string), on a character edge.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from server.exports import cases
from server.exports.columns import NUMBER, STRING, Column

SYSMIS = 0xFFEFFFFFFFFFFFFF  # -DBL_MAX
HIGHEST = 0x7FEFFFFFFFFFFFFF
LOWEST = 0xFFEFFFFFFFFFFFFE
MAX_WIDTH = 32_767
# Labels as ReadStat caps them: SPSS itself shows value labels up to 120 bytes.
MAX_VARIABLE_LABEL = 255
MAX_VALUE_LABEL = 120
RESERVED = frozenset(
    {"ALL", "AND", "BY", "EQ", "GE", "GT", "LE", "LT", "NE", "NOT", "OR", "TO", "WITH"}
)
FORMAT_A, FORMAT_F = 1, 5


@dataclass
class Variable:
    column: Column
    name: str  # the long name (7.13), up to 64 bytes
    shorts: list[str]  # the 8-byte dictionary names, one a segment
    width: int  # bytes for a string, 0 for a number
    offset: int = 0  # bytes into the case record

    @property
    def segments(self) -> list[int]:
        """Each segment's string width: one for a number or a string up to 255 bytes."""
        if self.width <= 255:
            return [self.width]
        count = (self.width + 251) // 252
        return [255] * (count - 1) + [self.width - 252 * (count - 1)]

    @property
    def storage(self) -> int:
        if not self.width:
            return 8
        *full, last = self.segments
        return 256 * len(full) + (last + 7) // 8 * 8


def _short_names(names: Sequence[str], segments: Sequence[int]) -> list[list[str]]:
    """8-byte upper-case dictionary names, unique, one a segment: the long name's start
    where it is plain ASCII and free, else V<n>."""
    used: set[str] = set()
    counter = 0

    def free(candidate: str) -> str:
        nonlocal counter
        while not candidate or candidate in used or candidate in RESERVED:
            counter += 1
            candidate = f"V{counter}"
        used.add(candidate)
        return candidate

    out = []
    for name, count in zip(names, segments, strict=True):
        head = name[:8].upper()
        first = free(head if head.isascii() and head[0].isalpha() else "")
        out.append([first] + [free(f"{first[:5]}{k}") for k in range(1, count)])
    return out


def variable_names(columns: Sequence[Column]) -> list[str]:
    """The columns' names as the .sav holds them (the codebook lists these for the file)."""
    # SPSS: 64 bytes, a letter first, names equal whatever their case.
    return cases.valid_names([c.name for c in columns], max_chars=64, max_bytes=64,
                             reserved=RESERVED, fold=True, lead_underscore=False)  # fmt: skip


def _variables(parquet: Path, columns: Sequence[Column]) -> list[Variable]:
    widths = cases.string_widths(parquet, columns, cap=MAX_WIDTH)
    names = variable_names(columns)
    variables = [
        Variable(c, name, [], widths[c.name] if c.type == STRING else 0)
        for c, name in zip(columns, names, strict=True)
    ]
    shorts = _short_names([v.name for v in variables], [len(v.segments) for v in variables])
    offset = 0
    for variable, short in zip(variables, shorts, strict=True):
        variable.shorts, variable.offset = short, offset
        offset += variable.storage
    return variables


def _record(handle: IO[bytes], kind: int, subtype: int, size: int, payload: bytes) -> None:
    handle.write(struct.pack("<4i", kind, subtype, size, len(payload) // size) + payload)


def _format(kind: int, width: int, decimals: int) -> int:
    return (kind << 16) | (min(width, 255) << 8) | decimals


def _variable_records(variable: Variable) -> bytes:
    out = bytearray()
    label = cases.utf8_cut(cases.variable_label(variable.column), MAX_VARIABLE_LABEL)
    for k, width in enumerate(variable.segments):
        if width:
            fmt = _format(FORMAT_A, variable.width if k == 0 else width, 0)
        else:
            decimals = 2 if variable.column.type == NUMBER else 0
            fmt = _format(FORMAT_F, 8, decimals)
        has_label = int(k == 0 and bool(label))
        name = variable.shorts[k].encode("ascii").ljust(8)
        out += struct.pack("<6i", 2, width, has_label, 0, fmt, fmt) + name
        if has_label:
            out += struct.pack("<i", len(label)) + label.ljust((len(label) + 3) // 4 * 4, b"\0")
        # A string's further 8-byte slots each have a continuation record.
        slots = (256 if k < len(variable.segments) - 1 else (width + 7) // 8 * 8) // 8
        for _ in range(max(0, slots - 1)):
            out += struct.pack("<6i", 2, -1, 0, 0, 0x011D01, 0x011D01) + b" " * 8
    return bytes(out)


def _value_labels(variable: Variable) -> bytes:
    labels = variable.column.value_labels
    if not labels or variable.width:
        return b""
    out = bytearray(struct.pack("<2i", 3, len(labels)))
    for code in sorted(labels):
        text = cases.utf8_cut(labels[code], MAX_VALUE_LABEL)
        padded = (len(text) + 1 + 7) // 8 * 8 - 1
        out += struct.pack("<dB", float(code), len(text)) + text.ljust(padded)
    return bytes(out + struct.pack("<3i", 4, 1, 1 + variable.offset // 8))


def _dictionary(variables: list[Variable], rows: int) -> bytes:
    record_bytes = sum(v.storage for v in variables)
    out = bytearray(b"$FL2" + b"@(#) SPSS DATA FILE - Metricis".ljust(60))
    # Layout 2, slots a case, no compression, no weight, cases (-1 beyond int32: 7.16 has
    # them), bias 100, the fixed creation moment, a blank file label.
    out += struct.pack("<5id", 2, record_bytes // 8, 0, 0, rows if rows < 2**31 else -1, 100.0)
    out += b"01 Jan 80" + b"00:00:00" + b" " * 64 + b"\0" * 3
    for variable in variables:
        out += _variable_records(variable)
    for variable in variables:
        out += _value_labels(variable)
    return bytes(out)


def _extensions(handle: IO[bytes], variables: list[Variable], rows: int) -> None:
    # Integer info: SPSS 20, IEEE doubles, little-endian, code page 65001 (UTF-8).
    _record(handle, 7, 3, 4, struct.pack("<8i", 20, 0, 0, -1, 1, 1, 2, 65001))
    _record(handle, 7, 4, 8, struct.pack("<3Q", SYSMIS, HIGHEST, LOWEST))
    display = bytearray()
    for v in variables:
        # Measure (1 nominal, 3 scale), display width, alignment (0 left, 1 right): per segment.
        measure, align = (1, 0) if v.width else (3, 1)
        width = min(max(v.width, 8), 40) if v.width else 8
        display += struct.pack("<3i", measure, width, align) * len(v.segments)
    _record(handle, 7, 11, 4, bytes(display))
    long_names = "\t".join(f"{v.shorts[0]}={v.name}" for v in variables)
    _record(handle, 7, 13, 1, long_names.encode("utf-8"))
    very_long = "".join(f"{v.shorts[0]}={v.width:05d}\0\t" for v in variables if v.width > 255)
    if very_long:
        _record(handle, 7, 14, 1, very_long.encode("ascii"))
    _record(handle, 7, 20, 1, b"UTF-8")
    _record(handle, 7, 16, 8, struct.pack("<2q", 1, rows))
    handle.write(struct.pack("<2i", 999, 0))


def _cases(table: Any, variables: list[Variable], record_bytes: int) -> np.ndarray:
    n = table.num_rows
    out = np.empty((n, record_bytes), dtype=np.uint8)
    for v in variables:
        values = table.column(v.column.name)
        if not v.width:
            bits = cases.numbers(values, SYSMIS)
            out[:, v.offset : v.offset + 8] = bits.view(np.uint8).reshape(n, 8)
            continue
        data = cases.text(values, v.width, ord(" "))
        at = v.offset
        out[:, at : at + v.storage] = ord(" ")
        # 255 bytes of the value in each 256-byte segment, the rest in the last (ReadStat
        # reads each segment but the last as 255 bytes; 252 a segment is SPSS's sizing).
        for k in range(len(v.segments)):
            chunk = data[:, 255 * k : 255 * (k + 1)]
            out[:, at + 256 * k : at + 256 * k + chunk.shape[1]] = chunk
    return out


def write_sav(parquet: Path, out: Path, columns: Sequence[Column]) -> None:
    """The Parquet's rows as an SPSS system file: same rows in, same bytes out."""
    variables = _variables(parquet, columns)
    rows = cases.row_count(parquet)
    record_bytes = sum(v.storage for v in variables)
    with open(out, "wb") as handle:
        handle.write(_dictionary(variables, rows))
        _extensions(handle, variables, rows)
        for table in cases.slices(parquet, record_bytes):
            handle.write(_cases(table, variables, record_bytes).data)
