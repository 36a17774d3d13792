"""Stata datasets (.dta, format 118; 119 past 32,767 variables), written as a stream from the
module's Parquet.

pyreadstat writes only whole pandas frames (a million trial rows peaked at 726 MB); this
writer holds one slice of cases at a time. The layout is Stata's `help dta` and ReadStat's
(what pyreadstat reads with; pandas.read_stata has its own reader): the header, a map of
section offsets (patched once the sections are written), variable types, names, sort
list, formats, value-label names, variable labels, no characteristics, the cases, the
strLs, the value-label tables. Little-endian, UTF-8.

Numbers (integer, boolean, number) are doubles, missing "."; strings are str# (NUL padded),
missing written as empty. A string column with a value longer than str#'s 2,045 bytes is a
strL: each case holds a (variable, observation) reference, 0 for an empty value, and the
text is a GSO record in the strLs section; the GSOs are spooled to a file beside the output
while the cases are written, then copied in after them.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from server.exports import cases
from server.exports.columns import STRING, Column

MISSING = 0x7FE0000000000000  # "." for a double
DOUBLE = 65526
STRL = 32768
MAX_WIDTH = 2045
# A GSO's head: "GSO", variable (u32), observation (u64), type (130: NUL-terminated text),
# length (u32, the NUL included); 20 bytes, packed.
GSO_HEAD = np.dtype([("gso", "S3"), ("v", "<u4"), ("o", "<u8"), ("t", "u1"), ("len", "<u4")])
MAX_LABEL = 320
RESERVED = frozenset(
    {"_all", "_b", "byte", "_coef", "_cons", "double", "float", "if", "in", "int", "long",
     "_n", "_N", "_pi", "_pred", "_rc", "_skip", "strL", "using", "with"}
)  # fmt: skip


def _tag(name: str, body: bytes) -> bytes:
    return f"<{name}>".encode() + body + f"</{name}>".encode()


def _fixed(text: str, size: int) -> bytes:
    """text in a NUL-padded field of size bytes (at most size - 1 of text)."""
    return cases.utf8_cut(text, size - 1).ljust(size, b"\0")


def variable_names(columns: Sequence[Column]) -> list[str]:
    """The columns' names as the .dta holds them (the codebook lists these for the file)."""
    # Stata: 32 characters (128 bytes), a letter or _ first, case-sensitive.
    names = cases.valid_names([c.name for c in columns], max_chars=32, max_bytes=128,
                              reserved=RESERVED, fold=False, lead_underscore=True)  # fmt: skip
    # str1 ... str2045 name types: not variable names either.
    return [f"{n}_" if n.startswith("str") and n[3:].isdigit() else n for n in names]


def _label_table(name: str, labels: dict[int, str]) -> bytes:
    """One value-label table: count, text length, offsets, values, NUL-terminated texts."""
    codes = sorted(labels)
    texts = [cases.utf8_cut(labels[c], 32_000) + b"\0" for c in codes]
    offsets = np.cumsum([0] + [len(t) for t in texts[:-1]]).astype("<i4")
    body = (
        struct.pack("<2i", len(codes), sum(map(len, texts)))
        + offsets.tobytes()
        + np.array(codes, dtype="<i4").tobytes()
        + b"".join(texts)
    )
    return _tag("lbl", struct.pack("<i", len(body)) + _fixed(name, 129) + b"\0" * 3 + body)


def _descriptors(
    columns: Sequence[Column], names: list[str], widths: list[int], release: int
) -> list[tuple[str, bytes]]:
    """The sections that describe the variables, in file order."""
    types = [w or DOUBLE for w in widths]
    formats = ["%9s" if w == STRL else f"%{w}s" if w else "%10.0g" for w in widths]
    # Value labels on numbers only (a label set is named after its variable).
    sets = [
        n if c.value_labels and not w else ""
        for n, c, w in zip(names, columns, widths, strict=True)
    ]
    return [
        ("variable_types", np.array(types, dtype="<u2").tobytes()),
        ("varnames", b"".join(_fixed(n, 129) for n in names)),
        ("sortlist", b"\0" * (len(names) + 1) * (2 if release == 118 else 4)),
        ("formats", b"".join(_fixed(f, 57) for f in formats)),
        ("value_label_names", b"".join(_fixed(n, 129) for n in sets)),
        (
            "variable_labels",
            b"".join(_fixed(cases.variable_label(c), MAX_LABEL + 1) for c in columns),
        ),
    ]


def _strl(values: Any, v: int, first: int, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """A strL column's slice: each case's (v, o) reference as 8 bytes (0 for an empty
    value; v in the low `shift` bits, o above), and the GSO records of its non-empty values.

    Built with numpy as text() is: the heads in one structured array, each value's bytes
    copied to its record by computed positions."""
    array = values.combine_chunks()
    n = len(array)
    offsets = cases.value_offsets(array) if n else np.zeros(1, dtype=np.int32)
    lengths = np.diff(offsets).astype(np.int64)
    keep = np.flatnonzero(cases.valid(array) & (lengths > 0)) if n else np.zeros(0, np.int64)
    observations = np.arange(first + 1, first + n + 1, dtype=np.uint64)
    refs = np.zeros(n, dtype="<u8")
    refs[keep] = np.uint64(v) | (observations[keep] << np.uint64(shift))
    sizes = lengths[keep]
    heads = np.zeros(len(keep), dtype=GSO_HEAD)
    heads["gso"], heads["v"], heads["o"], heads["t"] = b"GSO", v, observations[keep], 130
    heads["len"] = sizes + 1
    ends = np.cumsum(GSO_HEAD.itemsize + sizes + 1)
    starts = ends - (GSO_HEAD.itemsize + sizes + 1)
    gso = np.zeros(int(ends[-1]) if len(ends) else 0, dtype=np.uint8)
    gso[(starts[:, None] + np.arange(GSO_HEAD.itemsize)).ravel()] = heads.view(np.uint8)
    if len(keep):
        data = np.frombuffer(array.buffers()[2], dtype=np.uint8)
        # Byte j of value k: from its offset + j to its record's text start + j.
        within = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        source = np.repeat(offsets[:-1][keep], sizes) + within
        gso[np.repeat(starts + GSO_HEAD.itemsize, sizes) + within] = data[source]
    return refs.view(np.uint8).reshape(n, 8), gso


def _cases(
    table: Any, columns: Sequence[Column], widths: list[int], first: int, shift: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """A slice's case records and its strLs' GSO records."""
    n = table.num_rows
    out = np.empty((n, sum(8 if w in (0, STRL) else w for w in widths)), dtype=np.uint8)
    gsos = []
    at = 0
    for v, (column, width) in enumerate(zip(columns, widths, strict=True), start=1):
        values = table.column(column.name)
        if width == STRL:
            out[:, at : at + 8], gso = _strl(values, v, first, shift)
            gsos.append(gso)
        elif width:
            out[:, at : at + width] = cases.text(values, width, 0)
        else:
            bits = cases.numbers(values, MISSING)
            out[:, at : at + 8] = bits.view(np.uint8).reshape(n, 8)
        at += 8 if width in (0, STRL) else width
    return out, gsos


def write_dta(parquet: Path, out: Path, columns: Sequence[Column]) -> None:
    """The Parquet's rows as a Stata dataset: same rows in, same bytes out."""
    found = cases.string_widths(parquet, columns, cap=MAX_WIDTH + 1)
    widths = [(found[c.name] if c.type == STRING else 0) for c in columns]
    widths = [STRL if w > MAX_WIDTH else w for w in widths]
    names = variable_names(columns)
    rows = cases.row_count(parquet)
    # 119 past 32,767 variables: a 4-byte K and sort list, (v, o) as 3 + 5 bytes.
    release = 118 if len(columns) <= 32_767 else 119
    spool = out.with_name(out.name + ".strls")
    try:
        with open(out, "wb") as handle, open(spool, "w+b") as strls:
            _write(handle, strls, parquet, columns, widths, names, rows, release)
    finally:
        spool.unlink(missing_ok=True)


def _write(
    handle: IO[bytes],
    strls: IO[bytes],
    parquet: Path,
    columns: Sequence[Column],
    widths: list[int],
    names: list[str],
    rows: int,
    release: int,
) -> None:
    k = len(columns)
    count, shift = ("<H", 16) if release == 118 else ("<I", 24)
    size = sum(8 if w in (0, STRL) else w for w in widths)
    handle.write(b"<stata_dta>")
    map_at = _header(handle, release, struct.pack(count, k), rows)
    offsets = [0, map_at]
    handle.write(_tag("map", b"\0" * 8 * 14))

    def section(name: str, body: bytes) -> None:
        offsets.append(handle.tell())
        handle.write(_tag(name, body))

    for name, body in _descriptors(columns, names, widths, release):
        section(name, body)
    section("characteristics", b"")
    offsets.append(handle.tell())
    handle.write(b"<data>")
    first = 0
    for table in cases.slices(parquet, size):
        records, gsos = _cases(table, columns, widths, first, shift)
        handle.write(records.data)
        for gso in gsos:
            strls.write(gso.data)
        first += table.num_rows
    handle.write(b"</data>")
    offsets.append(handle.tell())
    handle.write(b"<strls>")
    strls.seek(0)
    shutil.copyfileobj(strls, handle, 1 << 20)
    handle.write(b"</strls>")
    tables = b"".join(
        _label_table(n, c.value_labels)
        for n, c, w in zip(names, columns, widths, strict=True)
        if c.value_labels and not w
    )
    section("value_labels", tables)
    offsets.append(handle.tell())
    handle.write(b"</stata_dta>")
    offsets.append(handle.tell())
    # The map: where each section starts, known only now that they are written.
    handle.seek(map_at + len(b"<map>"))
    handle.write(np.array(offsets, dtype="<u8").tobytes())


def _header(handle: IO[bytes], release: int, k: bytes, rows: int) -> int:
    """The header (a fixed timestamp: same rows, same bytes); where the map starts."""
    stamp = b"01 Jan 1980 00:00"
    handle.write(
        _tag(
            "header",
            _tag("release", str(release).encode())
            + _tag("byteorder", b"LSF")
            + _tag("K", k)
            + _tag("N", struct.pack("<Q", rows))
            + _tag("label", struct.pack("<H", 0))
            + _tag("timestamp", bytes([len(stamp)]) + stamp),
        )
    )
    return handle.tell()
