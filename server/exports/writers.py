"""File writers: CSV (RFC 4180), Parquet, the codebook and the zip (SPSS and Stata are
server/exports/spss.py and stata.py, made from the Parquet).

Every writer is deterministic: same rows in, same bytes out (no wall-clock values).
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from server.exports.columns import BOOLEAN, INTEGER, MISSING, NUMBER, Column

FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
COPY_BLOCK = 1 << 20
ROW_GROUP_ROWS = 32_768


class CrlfSink:
    """COPY's CSV (LF line ends) to RFC 4180's CRLF, keeping newlines inside quoted fields.

    Quotes toggle the quoted state (an escaped "" toggles twice), so after splitting a chunk
    on '"' the even parts are outside quotes; only their LFs are record ends. Byte-level work
    stays in C (split, replace, join)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.quoted = False

    def write(self, chunk: bytes) -> None:
        if b'"' not in chunk:
            self.out.write(chunk if self.quoted else chunk.replace(b"\n", b"\r\n"))
            return
        parts = chunk.split(b'"')
        start = 1 if self.quoted else 0
        for i in range(start, len(parts), 2):
            parts[i] = parts[i].replace(b"\n", b"\r\n")
        # An odd number of quotes flips the state for the next chunk.
        if (len(parts) - 1) % 2:
            self.quoted = not self.quoted
        self.out.write(b'"'.join(parts))


def arrow() -> Any:
    """pyarrow, its memory pool set for a streaming export (once a process).

    Arrow's default pool in the wheels (mimalloc) keeps the pages it has freed: converting a
    million rows block by block held ~60 MB more than the ~18 MB Arrow had allocated at any
    moment (measured). jemalloc with its decay at 0 gives freed pages back at once, and
    costs no measurable time here; a build without jemalloc falls back to the system pool.
    """
    import pyarrow as pa

    global _POOL_SET
    if not _POOL_SET:
        try:
            pool = pa.jemalloc_memory_pool()
            pa.jemalloc_set_decay_ms(0)
        except NotImplementedError:
            pool = pa.system_memory_pool()
        pa.set_memory_pool(pool)
        _POOL_SET = True
    return pa


_POOL_SET = False


def arrow_type(column: Column) -> Any:
    pa = arrow()

    return {INTEGER: pa.int64(), NUMBER: pa.float64(), BOOLEAN: pa.bool_()}.get(
        column.type, pa.string()
    )


def arrow_schema(columns: Sequence[Column]) -> Any:
    pa = arrow()

    return pa.schema([pa.field(c.name, arrow_type(c)) for c in columns])


def parquet_from_csv(csv_path: Path, out: Path, columns: Sequence[Column]) -> int:
    """Stream a COPY CSV into Parquet block by block, one row group a block; rows written."""
    pa = arrow()
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    schema = arrow_schema(columns)
    reader = pacsv.open_csv(
        csv_path,
        # Small blocks, one thread: the reader's read-ahead is the memory an export adds;
        # parsing is a fraction of the COPY's time either way.
        read_options=pacsv.ReadOptions(block_size=128 << 10, use_threads=False),
        # A quoted value may hold a newline (free text); without this the parser loses its
        # place in the block and the export fails.
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=schema,
            strings_can_be_null=True,
            # COPY writes NULL as an empty field and an empty string as "".
            quoted_strings_can_be_null=False,
            true_values=["true"],
            false_values=["false"],
        ),
    )
    rows = 0
    pending: list[Any] = []
    with pq.ParquetWriter(out, schema, compression="snappy") as writer:
        for batch in reader:
            pending.append(batch)
            rows += batch.num_rows
            # Row groups of about ROW_GROUP_ROWS: small blocks read, sensible groups written.
            if sum(b.num_rows for b in pending) >= ROW_GROUP_ROWS:
                writer.write_table(pa.Table.from_batches(pending), row_group_size=ROW_GROUP_ROWS)
                pending = []
        if pending:
            writer.write_table(pa.Table.from_batches(pending), row_group_size=ROW_GROUP_ROWS)
    return rows


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _copy_csv_value(value: Any) -> str:
    """A value as COPY writes it in CSV: NULL an empty field, every string quoted (so an
    empty string stays one), booleans true/false; parquet_from_csv reads this dialect."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return '"' + str(value).replace('"', '""') + '"'


class RowFiles:
    """Python rows (the session table) into CSV and/or Parquet, a batch at a time.

    The Parquet is made as the trials' is, from a CSV in COPY's dialect (parquet_from_csv):
    building Arrow arrays from Python lists (pa.array) imports pandas, ~45 MB of a worker's
    memory for a table of a few columns."""

    def __init__(
        self, columns: Sequence[Column], *, csv_path: Path | None, parquet_path: Path | None
    ) -> None:
        self.columns = list(columns)
        self.rows = 0
        self.parquet_path = parquet_path
        self._csv: IO[str] | None = None
        self._raw: IO[str] | None = None
        header = ",".join(_copy_csv_value(c.name) for c in columns)
        if csv_path is not None:
            self._csv = open(csv_path, "w", encoding="utf-8", newline="")  # noqa: SIM115
            self._csv_writer = csv.writer(self._csv, lineterminator="\r\n")
            self._csv_writer.writerow([c.name for c in columns])
        if parquet_path is not None:
            self.raw_path = parquet_path.with_suffix(".raw.csv")
            self._raw = open(self.raw_path, "w", encoding="utf-8", newline="")  # noqa: SIM115
            self._raw.write(header + "\n")

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        self.rows += len(rows)
        if self._csv is not None:
            self._csv_writer.writerows([_csv_value(v) for v in row] for row in rows)
        if self._raw is not None:
            self._raw.writelines(",".join(map(_copy_csv_value, row)) + "\n" for row in rows)

    def close(self, *, complete: bool = True) -> None:
        """Close the files; the Parquet is made only from a complete table."""
        if self._csv is not None:
            self._csv.close()
        if self._raw is not None:
            self._raw.close()
            if complete and self.parquet_path is not None:
                parquet_from_csv(self.raw_path, self.parquet_path, self.columns)
            self.raw_path.unlink()


CODEBOOK_COLUMNS = (
    "file", "column", "label", "type", "unit", "module_key", "module_version",
    "allowed_values", "value_labels", "missing",
)  # fmt: skip


def codebook_rows(files: Mapping[str, Sequence[Column]]) -> list[list[str]]:
    rows = []
    for name in sorted(files):
        for c in files[name]:
            rows.append(
                [
                    name,
                    c.name,
                    c.label,
                    c.type,
                    c.unit,
                    c.module_key,
                    "" if c.module_version is None else str(c.module_version),
                    "; ".join(c.allowed_values),
                    "; ".join(f"{k}={v}" for k, v in sorted(c.value_labels.items())),
                    MISSING,
                ]
            )
    return rows


def codebook_csv(files: Mapping[str, Sequence[Column]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CODEBOOK_COLUMNS)
    writer.writerows(codebook_rows(files))
    return buffer.getvalue().encode("utf-8")


def write_zip(out: Path, files: dict[str, Path]) -> None:
    """The files in name order, fixed timestamps and modes: the same files, the same zip.
    Parquet is compressed already and is stored; the rest is deflated at a fixed level."""
    with zipfile.ZipFile(out, "w", allowZip64=True) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
            info.create_system = 3
            info.external_attr = 0o644 << 16
            stored = name.endswith(".parquet")
            info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            # The deflate level lives on the entry (read by ZipFile.open): 1, for speed.
            info._compresslevel = None if stored else 1  # type: ignore[attr-defined]
            with open(files[name], "rb") as src, archive.open(info, "w", force_zip64=True) as dst:
                while block := src.read(COPY_BLOCK):
                    dst.write(block)
