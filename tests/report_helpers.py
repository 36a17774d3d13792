"""What the report tests share: the modules' declared psychometrics, the PDF's text, staff,
asking for a report and building it as the worker does."""

from __future__ import annotations

import io
import math
import uuid

import pypdf
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.reports import service
from server.reports.change import IMPROVED, WORSENED
from server.studies.models import StudyRole
from tests import factories

# The built-in modules' declared psychometrics (server/modules/builtin_cognitive.py and
# builtin_questionnaires.py).
RT = {"r": 0.80, "sd": 50.0}
MOOD = {"r": 0.84, "sd": 5.0}


def s_diff(r: float, sd: float) -> float:
    return math.sqrt(2 * (sd * math.sqrt(1 - r)) ** 2)


def text_of(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() for page in reader.pages)


async def staff(db: AsyncSession, settings: Settings, study, role=StudyRole.coordinator, sites=()):
    user = await factories.create_user(db)
    await factories.add_member(db, study, user, role, sites=sites)
    return user, await factories.auth_headers(db, settings, user)


async def ask(client: AsyncClient, headers, study_id, kind, subject_id, **options):
    return await client.post(
        "/api/reports",
        params={"study_id": str(study_id)},
        json={"kind": kind, "subject_id": str(subject_id), **options},
        headers=headers,
    )


async def built_pdf(client, db, settings, headers, report_id) -> bytes:
    """The worker's part (what workers.tasks.reports runs), then the download link."""
    await service.build(db, settings, uuid.UUID(report_id))
    read = (await client.get(f"/api/reports/{report_id}", headers=headers)).json()
    assert read["status"] == "succeeded" and read["download_url"], read
    assert "P-" not in read["download_url"]  # ids only in the link
    response = await client.get(read["download_url"], headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    return response.content


def expected_change(
    value: float, baseline: float, r: float, sd: float, higher_is_better: bool
) -> str:
    """The table's change cell as the test computes it: delta, RCI, and the reliable mark."""
    rci = (value - baseline) / s_diff(r, sd)
    better = rci > 0 if higher_is_better else rci < 0
    mark = "" if abs(rci) <= 1.96 else IMPROVED if better else WORSENED
    return f"{value - baseline:+.2f} ({rci:+.2f}) {mark}".rstrip()
