"""Building an export: select, stream, write, zip, publish; the worker's one call.

1. One transaction: the selection written to export_submissions, the totals set.
2. Per module version, one COPY streams its trials as CSV straight into a file (CRLF for
   the CSV asked for; Parquet, SPSS and Stata are made from the raw COPY file). Progress is
   written every few seconds in a transaction of its own.
3. The session table (small) in a read transaction; codebook, manifest and zip on disk.
4. No transaction open: the zip goes to the archive's storage under its final key, whole
   (storage.put_file writes a temporary name and renames, or PUTs in one go).
5. One transaction: the export marked done with its key and checksum. Run again after a
   crash, the build starts over from 1: nothing was offered before 5.
"""

# A worker process runs one export on its own loop: blocking file calls hold up nothing else.
# ruff: noqa: ASYNC230, ASYNC240

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import json
import tempfile
import tomllib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.archive.storage import ObjectStorage
from server.core.models import utcnow
from server.exports import psychds, query, sessions, writers
from server.exports.columns import STRING, Column, trial_columns, trial_id_columns
from server.exports.models import Export, ExportSubmission
from server.exports.plan import ExportGone, Plan, plan_export
from server.exports.stream import Progress, copy_trials

TABULAR = ("sav", "dta")


def storage_key(export: Export) -> str:
    return f"exports/{export.study_id}/{export.id}.zip"


def _version() -> str:
    try:
        return importlib.metadata.version("metricis")
    except importlib.metadata.PackageNotFoundError:
        # Run from a checkout (not installed): the version pyproject.toml declares.
        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        with open(pyproject, "rb") as handle:
            return str(tomllib.load(handle)["project"]["version"])


def _software(formats: set[str]) -> dict[str, str]:
    versions = {"metricis": _version()}
    if formats - {"csv"}:
        versions["pyarrow"] = importlib.metadata.version("pyarrow")
    if formats & set(TABULAR):
        # SPSS and Stata files are written by server/exports (spss.py, stata.py) with numpy.
        versions["numpy"] = importlib.metadata.version("numpy")
    return versions


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(writers.COPY_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _stringify(columns: list[Column], rows: list[list[Any]]) -> list[list[Any]]:
    text_at = [i for i, c in enumerate(columns) if c.type == STRING]
    for row in rows:
        for i in text_at:
            if row[i] is not None and not isinstance(row[i], str):
                row[i] = json.dumps(row[i]) if isinstance(row[i], dict | list) else str(row[i])
    return rows


async def build(
    sessionmaker: async_sessionmaker[AsyncSession],
    storage: ObjectStorage,
    export_id: uuid.UUID,
    *,
    pause_s: float = 0.0,
) -> str:
    """Build the export's zip and publish it; its storage key. Idempotent: a built export
    returns its key, an interrupted one starts over."""
    async with sessionmaker() as db, db.begin():
        planned = await plan_export(db, export_id)
    if isinstance(planned, str):
        return planned
    plan = planned
    progress = Progress(sessionmaker, plan)
    await progress.flush()
    # Psych-DS is a layout of the CSVs (asked for with it), not a format of its own.
    psych_ds = "psychds" in plan.formats
    formats = set(plan.formats) - {"psychds"}
    with tempfile.TemporaryDirectory(prefix="metricis-export-") as tmp_name:
        tmp = Path(tmp_name)
        files: dict[str, Path] = {}
        layouts: dict[str, list[Column]] = {}
        counts: dict[str, int] = {}
        for (key, version), module in sorted(plan.modules.items()):
            fields = trial_columns(module, plan.item_banks.get(module.id)) if module else []
            columns = trial_id_columns() + fields
            stem = f"trials_{key}_v{version}"
            needs_raw = bool(formats - {"csv"})
            raw = tmp / f"{stem}.raw.csv" if needs_raw else None
            crlf = tmp / f"{stem}.csv" if "csv" in formats else None
            sql = query.trial_select_sql(plan.export_id, key, version, fields)
            before = progress.done
            await copy_trials(sessionmaker, sql, raw=raw, crlf=crlf, progress=progress,
                               pause_s=pause_s)  # fmt: skip
            n = progress.done - before
            await _write_formats(tmp, stem, columns, formats, raw, crlf, files, layouts)
            for name in files:
                if name.startswith(stem + "."):
                    counts[name] = n
        async with sessionmaker() as db, db.begin():
            # One read transaction: the session table and the manifest's list of submissions
            # stream from server-side cursors straight into their files.
            scorers = await _write_sessions(db, plan, tmp, formats, files, layouts, counts)
            if psych_ds:
                psychds.layout(tmp, files, layouts, counts)
            (tmp / "codebook.csv").write_bytes(writers.codebook_csv(layouts))
            files["codebook.csv"] = tmp / "codebook.csv"
            head = {
                "format": "metricis-export/1",
                "request": {"filters": plan.filters, "formats": sorted(plan.formats)},
                "files": [
                    {"name": name, "rows": counts.get(name), "sha256": _sha256(files[name])}
                    for name in sorted(files)
                ],
                "modules": [
                    {"key": k, "version": v, "scorers": scorers.get(f"{k}@{v}", [])}
                    for k, v in sorted(plan.modules)
                ],
                # Submissions left out under their participants' consent, by reason (never who).
                "excluded": plan.excluded,
                "software": _software(formats),
            }
            files["manifest.json"] = tmp / "manifest.json"
            await _write_manifest(db, plan.export_id, head, files["manifest.json"])
        zip_path = tmp / "export.zip"
        writers.write_zip(zip_path, files)
        checksum, size = _sha256(zip_path), zip_path.stat().st_size
        async with sessionmaker() as db:
            export = await db.get(Export, plan.export_id)
            if export is None:
                raise ExportGone(str(plan.export_id))
            key = storage_key(export)
        # No transaction open from here to the upload's end.
        await asyncio.to_thread(storage.put_file, key, zip_path)
    async with sessionmaker() as db, db.begin():
        await db.execute(
            update(Export)
            .where(Export.id == plan.export_id)
            .values(storage_key=key, sha256=checksum, size_bytes=size, finished_at=utcnow(),
                    rows_done=plan.rows_total, progress_at=utcnow(), error=None)
        )  # fmt: skip
    return key


async def _write_formats(
    tmp: Path,
    stem: str,
    columns: list[Column],
    formats: set[str],
    raw: Path | None,
    crlf: Path | None,
    files: dict[str, Path],
    layouts: dict[str, list[Column]],
) -> None:
    if crlf is not None:
        files[f"{stem}.csv"] = crlf
    if raw is None:
        _layouts(stem, columns, formats, layouts)
        return
    parquet = tmp / f"{stem}.parquet"
    # On this thread: the worker runs one export a process, and another thread would bring
    # its own allocator arena (tens of MB of peak).
    writers.parquet_from_csv(raw, parquet, columns)
    raw.unlink()
    if "parquet" in formats:
        files[parquet.name] = parquet
    for fmt in TABULAR:
        if fmt in formats:
            out = tmp / f"{stem}.{fmt}"
            write = _statfiles(fmt).write
            write(parquet, out, columns)
            files[out.name] = out
    _layouts(stem, columns, formats, layouts)


def _layouts(stem: str, columns: list[Column], formats: set[str], out: dict[str, Any]) -> None:
    for fmt in sorted(formats):
        out[f"{stem}.{fmt}"] = _as_named_in(fmt, columns)


def _as_named_in(fmt: str, columns: list[Column]) -> list[Column]:
    """The columns under the names a file holds them by: SPSS and Stata rewrite a name they
    refuse (Stata: 32 characters), so the codebook lists each file's own."""
    if fmt not in TABULAR:
        return columns
    names = _statfiles(fmt).variable_names(columns)
    return [replace(c, name=n) for c, n in zip(columns, names, strict=True)]


def _statfiles(fmt: str) -> StatFormat:
    """The SPSS or Stata writer, imported when first asked for: they bring numpy (~10 MB of
    every worker process otherwise, most of which never write one)."""
    from server.exports import spss, stata

    if fmt == "sav":
        return StatFormat(spss.write_sav, spss.variable_names)
    return StatFormat(stata.write_dta, stata.variable_names)


@dataclass(frozen=True)
class StatFormat:
    write: Callable[[Path, Path, Sequence[Column]], None]
    variable_names: Callable[[Sequence[Column]], list[str]]


async def _write_sessions(
    db: AsyncSession,
    plan: Plan,
    tmp: Path,
    formats: set[str],
    files: dict[str, Path],
    layouts: dict[str, list[Column]],
    counts: dict[str, int],
) -> dict[str, list[str]]:
    """The session table's files, streamed a batch of sessions at a time; the scorers."""
    scope = {"export_id": plan.export_id, "filters": plan.filters,
             "data_as_of": plan.data_as_of, "modules": plan.modules}  # fmt: skip
    layout = await sessions.session_layout(db, **scope)
    columns = layout.columns
    parquet = tmp / "sessions.parquet"
    out = writers.RowFiles(
        columns,
        csv_path=tmp / "sessions.csv" if "csv" in formats else None,
        # pyarrow only when asked for: it weighs ~50 MB.
        parquet_path=parquet if formats - {"csv"} else None,
    )
    try:
        async for batch in sessions.session_rows(db, columns=columns, **scope):
            out.write(_stringify(columns, batch))
    except BaseException:
        out.close(complete=False)
        raise
    out.close()
    for fmt in formats:
        name = f"sessions.{fmt}"
        if fmt in TABULAR:
            _statfiles(fmt).write(parquet, tmp / name, columns)
        files[name] = tmp / name
        layouts[name] = _as_named_in(fmt, columns)
        counts[name] = out.rows
    return layout.scorers


async def _write_manifest(
    db: AsyncSession, export_id: uuid.UUID, head: dict[str, Any], path: Path
) -> None:
    """manifest.json: the head, then every submission read with its raw checksum, one a
    line, streamed (a study's list can be millions long)."""
    listed = await db.stream(
        select(ExportSubmission.submission_id, ExportSubmission.checksum)
        .where(ExportSubmission.export_id == export_id)
        .order_by(ExportSubmission.submission_id)
        .execution_options(yield_per=5_000)
    )
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(json.dumps(head, indent=1).removesuffix("\n}") + ',\n "submissions": [')
        separator = "\n  "
        async for submission_id, checksum in listed:
            handle.write(separator + json.dumps({"id": str(submission_id),
                                                 "raw_checksum": checksum}))  # fmt: skip
            separator = ",\n  "
        handle.write("\n ]\n}\n")
