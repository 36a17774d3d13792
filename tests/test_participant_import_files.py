"""Participant CSV import: a file that is not a readable CSV gets a 422 saying what is wrong,
never a 500 (found by fuzzing the OpenAPI: a lone carriage return was a `_csv.Error`)."""

from __future__ import annotations

from typing import Any

import pytest
from httpx import AsyncClient, Response
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.participants.models import Participant
from server.studies.models import Study, StudyRole
from tests import factories

HEADER = b"participant_code,site_code,email\n"


async def _study(db: AsyncSession, settings: Settings) -> tuple[Study, dict[str, str]]:
    study = await factories.create_study(db)
    await factories.create_site(db, study, code="LON")
    user = await factories.create_user(db)
    await factories.add_member(db, study, user, StudyRole.coordinator)
    return study, await factories.auth_headers(db, settings, user)


async def _upload(
    client: AsyncClient, study: Study, headers: dict[str, str], content: bytes
) -> Response:
    return await client.post(
        "/api/participants/import",
        params={"study_id": str(study.id)},
        files={"file": ("participants.csv", content, "text/csv")},
        headers=headers,
    )


def _envelope(response: Response, error_code: str = "invalid_csv") -> dict[str, Any]:
    assert response.status_code == 422, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error_code", "message", "correlation_id", "details"}
    assert body["error_code"] == error_code
    assert body["correlation_id"] == response.headers["X-Request-ID"]
    return body


@pytest.mark.parametrize(
    ("content", "message", "details"),
    [
        (b"", "empty", {}),
        (b"\r", "empty", {}),
        (b"\xef\xbb\xbf \n\n", "empty", {}),
        (HEADER, "no rows", {}),
        (HEADER + b"P-1,LON,caf\xe9@example.org\n", "not UTF-8", {"line": 2, "byte_offset": 44}),
        (HEADER + b"P-1\x00,LON,\n", "NUL", {"line": 2}),
        ("participant_code\n".encode("utf-16-le"), "NUL", {"line": 1}),
        (HEADER + b'"P-1,LON,\n', "line 2", {"line": 2}),  # a quote that never closes
        (HEADER + b'"P-1"x,LON,\n', "line 2", {"line": 2}),  # text after a closing quote
        (HEADER + b"P-1,LON," + b"x" * 200_000 + b"\n", "line 2", {"line": 2}),
    ],
    ids=[
        "empty",
        "carriage-return-only",
        "bom-and-blank-lines",
        "header-only",
        "latin-1",
        "nul-byte",
        "utf-16",
        "unclosed-quote",
        "text-after-quote",
        "huge-field",
    ],
)
async def test_unreadable_files_get_a_422_that_says_why(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    content: bytes,
    message: str,
    details: dict[str, Any],
) -> None:
    study, headers = await _study(db, settings)
    body = _envelope(await _upload(client, study, headers, content))
    assert message in body["message"], body
    assert details.items() <= (body["details"] or {}).items(), body
    count = select(func.count()).select_from(Participant).where(Participant.study_id == study.id)
    assert await db.scalar(count) == 0


async def test_carriage_returns_end_lines_as_old_spreadsheets_write_them(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, headers = await _study(db, settings)
    classic_mac = b"participant_code,site_code\rP-1,LON\rP-2,LON\r"
    response = await _upload(client, study, headers, classic_mac)
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 2
    # A lone carriage return inside a row ends that row: the next line is a row of its own.
    split = await _upload(client, study, headers, b"participant_code,site_code\nP-3\rP-4,LON\n")
    report = _envelope(split, "import_rejected")["details"]
    assert [(r["row"], r["participant_code"]) for r in report["rejected"]] == [(2, "P-3")]


async def test_a_row_with_more_fields_than_the_header_is_rejected_not_cut(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, headers = await _study(db, settings)
    content = HEADER + b"P-1,LON,a@example.org\nP-2,LON,b@example.org,ext 2\n"
    report = _envelope(await _upload(client, study, headers, content), "import_rejected")
    rejected = report["details"]["rejected"]
    assert [r["row"] for r in rejected] == [3]
    assert "4 fields" in rejected[0]["errors"][0] and "3" in rejected[0]["errors"][0]


async def test_a_duplicated_column_is_a_bad_header(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, headers = await _study(db, settings)
    content = b"participant_code,site_code,site_code\nP-1,LON,NYC\n"
    body = _envelope(await _upload(client, study, headers, content))
    assert body["details"]["duplicate_columns"] == ["site_code"]
