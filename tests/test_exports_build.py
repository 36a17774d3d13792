"""Exports built on a committed database, as the worker builds them: every format read back
to the same values, labels in SAV and DTA, a codebook covering every column, quarantined
data absent, a freeze re-run byte for byte."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pyreadstat
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.archive.storage import LocalStorage
from server.core.db import create_engine, create_sessionmaker
from server.exports import build
from server.exports import service as exports_service
from server.exports.models import Export
from server.exports.schemas import ExportCreate
from tests import export_factories as ef
from tests.conftest import drop_database
from tests.s3 import s3_endpoint, s3_storage

pytestmark = pytest.mark.slow
__all__ = ["s3_endpoint"]  # a fixture, used by name

ALL = ["csv", "dta", "parquet", "sav"]


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, object]]:
    name, url = await ef.new_database()
    settings = ef.settings_for(url)
    engine = create_engine(settings)
    sessions = create_sessionmaker(engine)
    try:
        seeded = await ef.seed(sessions, settings)
        storage = LocalStorage(tmp_path_factory.mktemp("archive"))
        export_id, data = await ef.export_now(sessions, storage, seeded, ExportCreate(formats=ALL))
        yield {"sessions": sessions, "seeded": seeded, "storage": storage,
               "export_id": export_id, "zip": data}  # fmt: skip
    finally:
        await engine.dispose()
        await drop_database(name)


def _csv(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data), keep_default_na=False, na_values=[""], dtype=str)


def _tmp(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


async def test_every_format_reads_back_to_the_same_values(
    world: dict[str, object], tmp_path: Path
) -> None:
    files = ef.members(world["zip"])  # type: ignore[arg-type]
    stems = sorted({n.rsplit(".", 1)[0] for n in files if n.startswith(("trials_", "sessions"))})
    assert stems == ["sessions", "trials_cpt_v1", "trials_mood9_v1", "trials_simple_rt_v1"]
    for stem in stems:
        text = files[f"{stem}.csv"]
        # RFC 4180: CRLF after every record, UTF-8.
        assert text.endswith(b"\r\n") and b"\n" not in text.replace(b"\r\n", b"")
        frame = _csv(text)
        parquet = pq.read_table(io.BytesIO(files[f"{stem}.parquet"])).to_pandas()
        sav, _ = pyreadstat.read_sav(_tmp(tmp_path, f"{stem}.sav", files[f"{stem}.sav"]))
        dta, _ = pyreadstat.read_dta(_tmp(tmp_path, f"{stem}.dta", files[f"{stem}.dta"]))
        assert list(frame.columns) == list(parquet.columns) == list(sav.columns)
        assert list(dta.columns) == list(frame.columns)
        assert len(frame) == len(parquet) == len(sav) == len(dta) > 0
        for column in frame.columns:
            for other in (parquet, sav, dta):
                assert [_norm(v) for v in frame[column]] == [_norm(v) for v in other[column]], (
                    stem,
                    column,
                )
    trials = _csv(files["trials_simple_rt_v1.csv"])
    assert len(trials) == 4 * 20
    # No nested JSON in any cell.
    for name, data in files.items():
        if name.endswith(".csv"):
            for row in csv.reader(io.StringIO(data.decode())):
                assert not any(cell.startswith(("{", "[")) for cell in row), (name, row)


def _norm(value: object) -> object:
    """One spelling per value across readers: numbers as floats, booleans 0/1, missing None."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or value == "":
        return None
    if isinstance(value, bool) or value in ("true", "false"):
        return float(value in (True, "true"))
    try:
        return round(float(value), 6)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)


async def test_sav_and_dta_carry_variable_and_value_labels(
    world: dict[str, object], tmp_path: Path
) -> None:
    files = ef.members(world["zip"])  # type: ignore[arg-type]
    for reader, ext in ((pyreadstat.read_sav, "sav"), (pyreadstat.read_dta, "dta")):
        _, meta = reader(_tmp(tmp_path, f"m.{ext}", files[f"trials_mood9_v1.{ext}"]))
        labels = meta.variable_value_labels
        assert labels["response_code"][0] == "Not at all"
        assert labels["response_code"][3] == "Nearly every day"
        names = dict(zip(meta.column_names, meta.column_labels, strict=True))
        assert names["rt_ms"].endswith("(ms)")
        _, meta = reader(_tmp(tmp_path, f"r.{ext}", files[f"trials_simple_rt_v1.{ext}"]))
        assert meta.variable_value_labels["responded"] == {0: "false", 1: "true"}


async def test_codebook_covers_every_column_of_every_file(
    world: dict[str, object], tmp_path: Path
) -> None:
    files = ef.members(world["zip"])  # type: ignore[arg-type]
    book = list(csv.DictReader(io.StringIO(files["codebook.csv"].decode())))
    described = {(r["file"], r["column"]) for r in book}
    held: dict[str, list[str]] = {}
    for name, data in files.items():
        if name.endswith(".csv") and name != "codebook.csv":
            held[name] = next(csv.reader(io.StringIO(data.decode())))
        elif name.endswith(".parquet"):
            held[name] = pq.read_schema(io.BytesIO(data)).names
        elif name.endswith((".sav", ".dta")):
            read = pyreadstat.read_sav if name.endswith(".sav") else pyreadstat.read_dta
            held[name] = read(_tmp(tmp_path, name.replace("/", "_"), data), metadataonly=True)[
                1
            ].column_names
    assert {n.rsplit(".", 1)[1] for n in held} == {"csv", "parquet", "sav", "dta"}
    for name, columns in held.items():
        assert {(name, c) for c in columns} <= described, name
    session_columns = {r["column"] for r in book if r["file"] == "sessions.csv"}
    # Server metrics, the client's where it differed, scorer versions, quality flags.
    assert "simple_rt_mean_rt_ms" in session_columns
    assert "simple_rt_mean_rt_ms_client" in session_columns
    assert "simple_rt_scorer" in session_columns
    assert any(c.startswith("qc_") for c in session_columns)


async def test_manifest_lists_files_submissions_and_versions_and_no_quarantine(
    world: dict[str, object],
) -> None:
    import hashlib

    files = ef.members(world["zip"])  # type: ignore[arg-type]
    seeded: ef.Seeded = world["seeded"]  # type: ignore[assignment]
    manifest = json.loads(files["manifest.json"])
    listed = {uuid.UUID(s["id"]) for s in manifest["submissions"]}
    assert listed == set(seeded.submission_ids)
    assert seeded.quarantined_id not in listed
    for entry in manifest["files"]:
        assert hashlib.sha256(files[entry["name"]]).hexdigest() == entry["sha256"]
    rows = {f["name"]: f["rows"] for f in manifest["files"]}
    assert rows["trials_simple_rt_v1.parquet"] == 80
    assert rows["sessions.csv"] == 4
    assert {m["key"] for m in manifest["modules"]} == {"simple_rt", "cpt", "mood9"}
    assert all(m["scorers"] for m in manifest["modules"])
    assert manifest["software"]["metricis"]


async def test_a_freeze_re_runs_to_the_same_bytes(world: dict[str, object]) -> None:
    sessions: async_sessionmaker[AsyncSession] = world["sessions"]  # type: ignore[assignment]
    storage: LocalStorage = world["storage"]  # type: ignore[assignment]
    seeded: ef.Seeded = world["seeded"]  # type: ignore[assignment]
    async with sessions() as db, db.begin():
        original = await db.get(Export, world["export_id"])
        assert original is not None
        await exports_service.freeze(db, export=original, user_id=seeded.user_id)
        again = await exports_service.rerun(db, source=original, user_id=seeded.user_id)
    key = await build.build(sessions, storage, again.id)
    assert storage.get(key) == world["zip"]


async def test_a_freeze_re_runs_to_the_same_bytes_after_its_flags_are_recomputed(
    world: dict[str, object],
) -> None:
    """Quality checks are recomputed whole when a session is rescored: a freeze's re-run
    still shows the flags its export read, while a new export shows today's."""
    sessions: async_sessionmaker[AsyncSession] = world["sessions"]  # type: ignore[assignment]
    storage: LocalStorage = world["storage"]  # type: ignore[assignment]
    seeded: ef.Seeded = world["seeded"]  # type: ignore[assignment]
    flip = text("UPDATE quality_checks SET fired = NOT fired WHERE session_id IN "
                "(SELECT id FROM assessment_sessions WHERE study_id = :s)")  # fmt: skip
    async with sessions() as db, db.begin():
        original = await db.get(Export, world["export_id"])
        assert original is not None
        await exports_service.freeze(db, export=original, user_id=seeded.user_id)
        again = await exports_service.rerun(db, source=original, user_id=seeded.user_id)
        assert (await db.execute(flip, {"s": seeded.study.id})).rowcount > 0  # type: ignore[attr-defined]
    try:
        key = await build.build(sessions, storage, again.id)
        assert storage.get(key) == world["zip"]
        _, fresh = await ef.export_now(sessions, storage, seeded, ExportCreate(formats=["csv"]))
        before = ef.members(world["zip"])["sessions.csv"]  # type: ignore[arg-type]
        assert ef.members(fresh)["sessions.csv"] != before
    finally:
        async with sessions() as db, db.begin():
            await db.execute(flip, {"s": seeded.study.id})


async def test_filters_narrow_the_export(world: dict[str, object]) -> None:
    sessions = world["sessions"]
    seeded: ef.Seeded = world["seeded"]  # type: ignore[assignment]
    request = ExportCreate(
        site_ids=[seeded.sites[0].id], modules=[{"key": "mood9"}], formats=["csv"]
    )
    _, data = await ef.export_now(sessions, world["storage"], seeded, request)  # type: ignore[arg-type]
    files = ef.members(data)
    assert sorted(files) == ["codebook.csv", "manifest.json", "sessions.csv",
                             "trials_mood9_v1.csv"]  # fmt: skip
    trials = _csv(files["trials_mood9_v1.csv"])
    assert set(trials["site"]) == {"LON"} and len(trials) == 2 * 5


async def test_psych_ds_layout_names_the_csvs_by_keywords(world: dict[str, object]) -> None:
    seeded: ef.Seeded = world["seeded"]  # type: ignore[assignment]
    request = ExportCreate(modules=[{"key": "simple_rt"}], formats=["psychds"])
    _, data = await ef.export_now(world["sessions"], world["storage"], seeded, request)  # type: ignore[arg-type]
    files = ef.members(data)
    assert "data/level-trial_module-simplert_version-1_data.csv" in files
    assert "data/level-session_data.csv" in files
    assert files["data/level-session_data.csv"] == files["sessions.csv"]
    description = json.loads(files["dataset_description.json"])
    header = files["trials_simple_rt_v1.csv"].split(b"\r\n", 1)[0].decode().split(",")
    assert set(header) <= set(description["variableMeasured"])
    book = files["codebook.csv"].decode()
    assert "data/level-session_data.csv,participant_code" in book
    rows = {f["name"]: f["rows"] for f in json.loads(files["manifest.json"])["files"]}
    assert rows["data/level-session_data.csv"] == rows["sessions.csv"] > 0


async def test_an_export_built_to_s3_is_the_same_zip(
    world: dict[str, object], s3_endpoint: str
) -> None:
    """The archive's S3 storage (moto's server over HTTP): the zip goes up whole, in one
    upload, and holds the same bytes as the one built to a directory (no wall-clock value,
    no storage detail inside)."""
    sessions: async_sessionmaker[AsyncSession] = world["sessions"]  # type: ignore[assignment]
    seeded: ef.Seeded = world["seeded"]  # type: ignore[assignment]
    storage = s3_storage(s3_endpoint)
    async with sessions() as db, db.begin():
        original = await db.get(Export, world["export_id"])
        assert original is not None
        await exports_service.freeze(db, export=original, user_id=seeded.user_id)
        again = await exports_service.rerun(db, source=original, user_id=seeded.user_id)
    key = await build.build(sessions, storage, again.id)
    assert list(storage.list("exports/")) == [key]
    assert b"".join(storage.stream(key)) == world["zip"]
