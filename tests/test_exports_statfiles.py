"""The streamed SPSS and Stata writers on their edge cases, each file read back with pyreadstat
and with pandas (pd.read_spss goes through pyreadstat, pd.read_stata is pandas' own reader):
the same values as the rows written, labels present, rows in order, the same bytes again."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyreadstat
import pytest

from server.exports import build, spss, stata, writers
from server.exports.columns import BOOLEAN, BOOLEAN_LABELS, INTEGER, NUMBER, Column

COLUMNS = [
    Column("participant_code", "Participant code"),
    Column("response_code", "Response", INTEGER, value_labels={0: "Not at all", 3: "Nearly ü"}),
    Column("rt_ms", "Reaction time", NUMBER, unit="ms"),
    Column("responded", "Responded", BOOLEAN, value_labels=dict(BOOLEAN_LABELS)),
    Column("note", "Free text"),
    Column("never", "Never answered", NUMBER),
    Column("never_text", "Never answered (text)"),
]

Writer = Callable[[Path, Path, Sequence[Column]], None]
FORMATS: list[tuple[str, Writer]] = [("sav", spss.write_sav), ("dta", stata.write_dta)]


def _parquet(tmp_path: Path, columns: Sequence[Column], rows: list[list[Any]]) -> Path:
    """rows into Parquet as the export makes it (a COPY-dialect CSV through Arrow)."""
    path = tmp_path / "t.parquet"
    files = writers.RowFiles(columns, csv_path=None, parquet_path=path)
    files.write(rows)
    files.close()
    return path


def _read(fmt: str, path: Path) -> tuple[list[pd.DataFrame], Any]:
    """The file through pyreadstat and through pandas; pyreadstat's metadata."""
    if fmt == "sav":
        frame, meta = pyreadstat.read_sav(str(path))
        other = pd.read_spss(path, convert_categoricals=False)
    else:
        frame, meta = pyreadstat.read_dta(str(path))
        other = pd.read_stata(path, convert_categoricals=False)
    return [frame, other], meta


def _same(expected: Any, got: Any) -> bool:
    """Missing is empty for strings and NaN for numbers; booleans are 0/1."""
    missing = got is None or got == "" or (isinstance(got, float) and math.isnan(got))
    if expected is None or expected == "":
        return missing
    if isinstance(expected, bool):
        return bool(got == float(expected))
    return bool(got == expected)


def _check(fmt: str, path: Path, columns: Sequence[Column], rows: list[list[Any]]) -> Any:
    frames, meta = _read(fmt, path)
    for frame in frames:
        assert len(frame) == len(rows) and frame.shape[1] == len(columns)
        for j, column in enumerate(columns):
            got = list(frame.iloc[:, j])
            bad = [(i, r[j], g) for i, (r, g) in enumerate(zip(rows, got, strict=True))
                   if not _same(r[j], g)]  # fmt: skip
            assert not bad, (fmt, column.name, bad[:3])
    return meta


def _rows(n: int) -> list[list[Any]]:
    return [
        [
            f"P-{i:06d}",
            None if i % 5 == 0 else i % 4,
            None if i % 7 == 0 else 250.5 + i,
            None if i % 11 == 0 else bool(i % 2),
            None if i % 3 == 0 else ["", 'say "hi", then', "Zoë — 東京 ✓", "line\nbreak"][i % 4],
            None,
            None,
        ]
        for i in range(n)
    ]


@pytest.mark.parametrize(("fmt", "write"), FORMATS)
def test_values_labels_and_order_read_back_across_many_row_groups(
    tmp_path: Path, fmt: str, write: Writer
) -> None:
    # 100,000 rows: four Parquet row groups of 32,768, each written in several slices.
    rows = _rows(100_000)
    parquet = _parquet(tmp_path, COLUMNS, rows)
    out = tmp_path / f"t.{fmt}"
    write(parquet, out, COLUMNS)
    meta = _check(fmt, out, COLUMNS, rows)
    assert meta.column_names == [c.name for c in COLUMNS]
    labels = dict(zip(meta.column_names, meta.column_labels, strict=True))
    assert labels["rt_ms"] == "Reaction time (ms)"
    assert meta.variable_value_labels["response_code"] == {0: "Not at all", 3: "Nearly ü"}
    assert meta.variable_value_labels["responded"] == {0: "false", 1: "true"}
    assert "note" not in meta.variable_value_labels


@pytest.mark.parametrize(("fmt", "write"), FORMATS)
def test_an_empty_table_is_a_valid_file(tmp_path: Path, fmt: str, write: Writer) -> None:
    parquet = _parquet(tmp_path, COLUMNS, [])
    out = tmp_path / f"t.{fmt}"
    write(parquet, out, COLUMNS)
    meta = _check(fmt, out, COLUMNS, [])
    assert meta.column_names == [c.name for c in COLUMNS]


@pytest.mark.parametrize(("fmt", "write"), FORMATS)
def test_long_strings_keep_every_byte(tmp_path: Path, fmt: str, write: Writer) -> None:
    # SPSS: past 255 bytes a very long string (segments); Stata: past 2,045 bytes a strL.
    columns = [Column("id", "Id", INTEGER), Column("text", "Text")]
    long_ = ",ä“quoted”" * 400  # 5,200 bytes of UTF-8 (SPSS drops trailing spaces)
    rows: list[list[Any]] = [[i, [long_, "", None, "short", long_[:300]][i % 5]] for i in range(40)]
    parquet = _parquet(tmp_path, columns, rows)
    out = tmp_path / f"t.{fmt}"
    write(parquet, out, columns)
    _check(fmt, out, columns, rows)


def test_spss_cuts_a_string_past_32767_bytes_on_a_character_edge(tmp_path: Path) -> None:
    columns = [Column("text", "Text")]
    rows: list[list[Any]] = [["é" * 20_000], ["b"]]
    parquet = _parquet(tmp_path, columns, rows)
    spss.write_sav(parquet, tmp_path / "t.sav", columns)
    frame, _ = pyreadstat.read_sav(str(tmp_path / "t.sav"))
    assert frame["text"][0] == "é" * 16_383 and frame["text"][1] == "b"


@pytest.mark.parametrize(("fmt", "write"), FORMATS)
def test_the_same_rows_give_the_same_bytes(tmp_path: Path, fmt: str, write: Writer) -> None:
    parquet = _parquet(tmp_path, COLUMNS, _rows(1_000))
    write(parquet, tmp_path / f"a.{fmt}", COLUMNS)
    write(parquet, tmp_path / f"b.{fmt}", COLUMNS)
    assert (tmp_path / f"a.{fmt}").read_bytes() == (tmp_path / f"b.{fmt}").read_bytes()


@pytest.mark.parametrize(("fmt", "write"), FORMATS)
def test_names_a_format_refuses_are_rewritten_not_fatal(
    tmp_path: Path, fmt: str, write: Writer
) -> None:
    name = "a_metric_name_longer_than_stata_allows_for_a_variable"
    odd = [name, name + "_client", "2nd-try", "_hidden", "all"]
    columns = [Column(n, f"Label {i}", NUMBER) for i, n in enumerate(odd)]
    rows: list[list[Any]] = [[1.0, 2.0, 3.0, 4.0, 5.0]]
    parquet = _parquet(tmp_path, columns, rows)
    write(parquet, tmp_path / f"t.{fmt}", columns)
    meta = _check(fmt, tmp_path / f"t.{fmt}", columns, rows)
    if fmt == "sav":
        # 64 bytes fit; no leading _; ALL is reserved whatever its case.
        expected = [name, name + "_client", "v2nd_try", "v_hidden", "all_2"]
    else:
        # 32 characters, unique once cut; _ may lead; "all" is free.
        expected = [name[:32], name[:30] + "_2", "v2nd_try", "_hidden", "all"]
    assert meta.column_names == expected
    assert meta.column_labels == [f"Label {i}" for i in range(len(odd))]
    # The codebook lists the file's columns by the names the file holds.
    book = writers.codebook_rows({f"t.{fmt}": build._as_named_in(fmt, columns)})
    assert [row[1] for row in book] == expected
