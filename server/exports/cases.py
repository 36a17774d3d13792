"""Parquet row groups to fixed-width case records, for the SPSS and Stata writers.

Both formats store a case as one fixed-width record: numbers as 8-byte doubles, strings as
byte fields padded to the column's width. The writers read the module's Parquet a slice at
a time and build each slice's records with numpy (whole columns at once, never a Python
loop over values), so memory stays flat however many rows the study holds. Arrow arrays are
read through their buffers: Array.to_pylist and pandas would cost per value or +45 MB.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from server.exports.columns import STRING, Column
from server.exports.writers import arrow

# Bytes of case records built at once: a slice's arrays stay small beside the worker's
# ~110 MB of imports whatever the row width (a 30 KB string column included). 1 MB: 5 MB
# less peak than 4 MB for ~0.1 s more a million rows (measured).
SLICE_BYTES = 1 << 20


def variable_label(column: Column) -> str:
    return column.label + (f" ({column.unit})" if column.unit else "")


def utf8_cut(text: str, limit: int) -> bytes:
    """text's UTF-8 bytes, at most limit, never ending inside a character."""
    data = text.encode("utf-8")
    return data if len(data) <= limit else data[:limit].decode("utf-8", "ignore").encode()


def valid_names(
    names: Sequence[str],
    *,
    max_chars: int,
    max_bytes: int,
    reserved: frozenset[str],
    fold: bool,
    lead_underscore: bool,
) -> list[str]:
    """Each name as the format allows it: letters, digits and _, starting with a letter (or
    _ where lead_underscore), at most max_chars and max_bytes of UTF-8, not reserved, unique
    (case-insensitively where fold). The exports' names are snake_case already and pass
    unchanged; a schema's odd property name is rewritten rather than failing the export."""

    def cut(text: str, chars: int, size: int) -> str:
        return utf8_cut(text[:chars], size).decode("utf-8")

    out: list[str] = []
    seen: set[str] = set()
    if fold:
        # Case-insensitive names (SPSS): "all" is as reserved as "ALL".
        reserved = frozenset(r.casefold() for r in reserved)
    for name in names:
        clean = re.sub(r"\W", "_", name) or "v"
        if not (clean[0].isalpha() or (lead_underscore and clean[0] == "_")):
            clean = "v" + clean
        candidate, n = cut(clean, max_chars, max_bytes), 1
        key = candidate.casefold() if fold else candidate
        while key in seen or key in reserved:
            n += 1
            suffix = f"_{n}"
            candidate = cut(clean, max_chars - len(suffix), max_bytes - len(suffix)) + suffix
            key = candidate.casefold() if fold else candidate
        seen.add(key)
        out.append(candidate)
    return out


def string_widths(parquet: Path, columns: Sequence[Column], *, cap: int) -> dict[str, int]:
    """Each string column's longest value in UTF-8 bytes (at least 1, at most cap): one pass
    over the string columns, a row group at a time."""
    import pyarrow.parquet as pq

    arrow()
    names = [c.name for c in columns if c.type == STRING]
    widths = dict.fromkeys(names, 1)
    if not names:
        return widths
    with pq.ParquetFile(parquet) as source:
        for group in range(source.num_row_groups):
            table = source.read_row_group(group, columns=names, use_threads=False)
            for name in names:
                array = table.column(name).combine_chunks()
                if len(array):
                    lengths = np.diff(value_offsets(array))
                    longest = int(np.max(lengths, where=valid(array), initial=0))
                    widths[name] = max(widths[name], min(cap, longest))
    return widths


def slices(parquet: Path, record_bytes: int) -> Iterator[Any]:
    """The Parquet's rows in file order as Arrow tables of about SLICE_BYTES of records."""
    import pyarrow.parquet as pq

    arrow()
    step = max(1, SLICE_BYTES // max(1, record_bytes))
    with pq.ParquetFile(parquet) as source:
        for group in range(source.num_row_groups):
            table = source.read_row_group(group, use_threads=False)
            for start in range(0, table.num_rows, step):
                yield table.slice(start, step)


def row_count(parquet: Path) -> int:
    import pyarrow.parquet as pq

    arrow()
    with pq.ParquetFile(parquet) as source:
        return int(source.metadata.num_rows)


def valid(array: Any) -> np.ndarray:
    """The array's validity bitmap as bools (all true without one)."""
    n, bitmap = len(array), array.buffers()[0]
    if bitmap is None:
        return np.ones(n, dtype=bool)
    bits = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), bitorder="little")
    return bits[array.offset : array.offset + n].astype(bool)


def value_offsets(array: Any) -> np.ndarray:
    """A string array's n + 1 value offsets into its data buffer."""
    n = len(array)
    return np.frombuffer(array.buffers()[1], dtype=np.int32)[array.offset : array.offset + n + 1]


def numbers(values: Any, missing: int) -> np.ndarray:
    """A numeric or boolean column as float64 bytes (uint64 view): booleans 0/1, null and
    non-finite values as the format's missing-value bit pattern.

    Read from the Arrow buffers with numpy: to_numpy on an array with nulls, fill_null with
    a Python scalar and pa.scalar import pandas (+45 MB), and pyarrow.compute's kernels
    weigh ~15 MB of a worker's memory the rest of the export never needs."""
    import pyarrow as pa

    array = values.combine_chunks()
    n, start, data, kind = len(array), array.offset, array.buffers()[1], array.type
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    # The Parquet's types are writers.arrow_type's: int64, float64 or bool (a bitmap).
    if pa.types.is_boolean(kind):
        flags = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
        floats = flags[start : start + n].astype(np.float64)
    elif kind in (pa.int64(), pa.float64()):
        stored = np.int64 if kind == pa.int64() else np.float64
        floats = np.frombuffer(data, dtype=stored)[start : start + n].astype(np.float64)
    else:
        raise TypeError(f"not a number column: {kind}")
    bits = floats.view(np.uint64)
    bits[~(valid(array) & np.isfinite(floats))] = missing
    return bits


def text(values: Any, width: int, pad: int) -> np.ndarray:
    """A string column as an (n, width) uint8 matrix: each value's UTF-8 bytes, then pad
    bytes; null as all pad (empty). Longer values are cut at width on a character edge.

    The bytes of values that fit are copied with one masked assignment: the row-major
    positions of a (row, byte < length) mask are the string data in order."""
    array = values.combine_chunks()
    n = len(array)
    out = np.full((n, width), pad, dtype=np.uint8)
    buffers = array.buffers()
    if n == 0 or buffers[2] is None:
        return out
    offsets = value_offsets(array)
    data = np.frombuffer(buffers[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    lengths = np.diff(offsets)
    kept = np.where(valid(array), np.minimum(lengths, width), 0)
    if np.array_equal(kept, lengths):
        out[np.arange(width) < lengths[:, None]] = data
        return out
    starts = offsets[:-1] - offsets[0]
    # Back off a cut that would split a character: while the first byte left out is a
    # UTF-8 continuation byte (10xxxxxx), keep one byte fewer (a character is <= 4 bytes).
    for _ in range(3):
        cut = (kept < lengths) & (kept > 0)
        at = data[np.minimum(starts + kept, len(data) - 1)]
        inside = cut & ((at & 0xC0) == 0x80)
        if not inside.any():
            break
        kept = kept - inside
    # Each data byte's place in its value; the bytes kept are those before the cut.
    position = np.arange(len(data)) - np.repeat(starts, lengths)
    out[np.arange(width) < kept[:, None]] = data[position < np.repeat(kept, lengths)]
    return out
