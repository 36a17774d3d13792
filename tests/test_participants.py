from __future__ import annotations

from httpx import AsyncClient
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.participants.models import Participant, ParticipantContact
from server.studies.models import StudyRole
from tests import factories


async def _coordinator(
    db: AsyncSession, settings: Settings, role: StudyRole = StudyRole.coordinator
):
    study = await factories.create_study(db)
    site = await factories.create_site(db, study, code="LON")
    other_site = await factories.create_site(db, study, code="NYC")
    user = await factories.create_user(db)
    await factories.add_member(db, study, user, role)
    return study, site, other_site, await factories.auth_headers(db, settings, user)


async def test_enrol_list_and_page_through_participants(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, site, other_site, headers = await _coordinator(db, settings)
    for n in range(5):
        response = await client.post(
            "/api/participants",
            params={"study_id": str(study.id)},
            json={
                "site_id": str(site.id if n % 2 else other_site.id),
                "participant_code": f"P-{n:03d}",
                "timezone": "Europe/London",
                "contact": {"email": f"p{n}@example.org", "phone": "+44 20 7946 0000"},
            },
            headers=headers,
        )
        assert response.status_code == 201, response.text
        assert "contact" not in response.json() and "email" not in response.text

    codes: list[str] = []
    cursor = None
    while True:
        params = {"study_id": str(study.id), "limit": "2"}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/api/participants", params=params, headers=headers)).json()
        codes += [p["participant_code"] for p in page["items"]]
        assert "example.org" not in str(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert codes == [f"P-{n:03d}" for n in range(5)]

    only_site = await client.get(
        "/api/participants",
        params={"study_id": str(study.id), "site_id": str(site.id)},
        headers=headers,
    )
    assert [p["participant_code"] for p in only_site.json()["items"]] == ["P-001", "P-003"]


async def test_duplicate_code_conflicts_and_foreign_site_is_rejected(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, site, _, headers = await _coordinator(db, settings)
    other_study = await factories.create_study(db)
    foreign_site = await factories.create_site(db, other_study)
    body = {"site_id": str(site.id), "participant_code": "DUP-1"}
    params = {"study_id": str(study.id)}
    assert (
        await client.post("/api/participants", params=params, json=body, headers=headers)
    ).status_code == 201
    again = await client.post("/api/participants", params=params, json=body, headers=headers)
    assert again.status_code == 409
    assert again.json()["error_code"] == "participant_code_taken"
    foreign = await client.post(
        "/api/participants",
        params=params,
        json={"site_id": str(foreign_site.id), "participant_code": "X-1"},
        headers=headers,
    )
    assert foreign.status_code == 422
    assert foreign.json()["details"][0]["loc"] == ["body", "site_id"]


async def test_contact_details_only_for_coordinators(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, site, _, coordinator = await _coordinator(db, settings)
    researcher = await factories.create_user(db)
    await factories.add_member(db, study, researcher, StudyRole.researcher)
    researcher_headers = await factories.auth_headers(db, settings, researcher)
    participant = await factories.create_participant(db, site, email="pat@example.org")
    url = f"/api/participants/{participant.id}/contact"

    assert (await client.get(url, headers=coordinator)).json()["email"] == "pat@example.org"
    denied = await client.get(url, headers=researcher_headers)
    assert denied.status_code == 403
    assert "pat@example.org" not in denied.text
    # Researchers read participants, without contact details.
    read = await client.get(f"/api/participants/{participant.id}", headers=researcher_headers)
    assert read.status_code == 200 and "pat@example.org" not in read.text


async def test_viewer_cannot_enrol(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, site, _, viewer = await _coordinator(db, settings, role=StudyRole.viewer)
    response = await client.post(
        "/api/participants",
        params={"study_id": str(study.id)},
        json={"site_id": str(site.id), "participant_code": "V-1"},
        headers=viewer,
    )
    assert response.status_code == 403
    assert response.json()["error_code"] == "forbidden"
    count = await db.scalar(
        select(func.count()).select_from(Participant).where(Participant.study_id == study.id)
    )
    assert count == 0


CSV_GOOD = (
    "participant_code,site_code,timezone,status,enrolled_at,email,phone\n"
    "C-001,LON,Europe/London,enrolled,2026-01-05,c1@example.org,+44 20 7946 0001\n"
    "C-002,NYC,America/New_York,active,2026-01-06T09:30:00+00:00,,\n"
    "C-003,LON,,,,,\n"
)


async def _import(
    client: AsyncClient,
    study_id: object,
    content: str,
    headers: dict[str, str],
    dry_run: bool = False,
):
    return await client.post(
        "/api/participants/import",
        params={"study_id": str(study_id), "dry_run": str(dry_run).lower()},
        files={"file": ("participants.csv", content.encode(), "text/csv")},
        headers=headers,
    )


async def test_csv_import_good_rows(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, _, _, headers = await _coordinator(db, settings)
    dry = await _import(client, study.id, CSV_GOOD, headers, dry_run=True)
    assert dry.status_code == 200, dry.text
    assert dry.json() == {
        "dry_run": True,
        "total_rows": 3,
        "accepted": 3,
        "rejected": [],
        "created": 0,
    }
    count = select(func.count()).select_from(Participant).where(Participant.study_id == study.id)
    assert await db.scalar(count) == 0

    done = await _import(client, study.id, CSV_GOOD, headers)
    assert done.status_code == 200
    assert done.json()["created"] == 3
    assert await db.scalar(count) == 3
    assert await db.scalar(select(func.count()).select_from(ParticipantContact)) >= 1
    listed = (
        await client.get("/api/participants", params={"study_id": str(study.id)}, headers=headers)
    ).json()
    by_code = {p["participant_code"]: p for p in listed["items"]}
    assert by_code["C-002"]["status"] == "active"
    assert by_code["C-002"]["timezone"] == "America/New_York"
    assert by_code["C-001"]["enrolled_at"].startswith("2026-01-05")


async def test_csv_import_bad_rows_reports_each_and_writes_nothing(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, site, _, headers = await _coordinator(db, settings)
    await factories.create_participant(db, site, code="EXISTING")
    content = (
        "participant_code,site_code,timezone,email\n"
        "OK-1,LON,UTC,ok@example.org\n"  # row 2: fine
        "EXISTING,LON,UTC,\n"  # row 3: already enrolled
        "BAD-SITE,ZZZ,UTC,\n"  # row 4: no such site
        "BAD-TZ,LON,Mars/Olympus,\n"  # row 5: bad zone
        "BAD-MAIL,LON,UTC,not-an-email\n"  # row 6: bad email
        "OK-1,NYC,UTC,\n"  # row 7: duplicate in file
        ",LON,UTC,\n"  # row 8: no code
    )
    response = await _import(client, study.id, content, headers)
    assert response.status_code == 422
    body = response.json()
    assert body["error_code"] == "import_rejected"
    report = body["details"]
    assert report["total_rows"] == 7 and report["accepted"] == 1 and report["created"] == 0
    rejected = {r["row"]: " ".join(r["errors"]) for r in report["rejected"]}
    assert set(rejected) == {3, 4, 5, 6, 7, 8}
    assert "already enrolled" in rejected[3]
    assert "site_code" in rejected[4]
    assert "timezone" in rejected[5]
    assert "email" in rejected[6] and "not-an-email" not in rejected[6]
    assert "duplicate of row 2" in rejected[7]
    assert "participant_code" in rejected[8]
    total = await db.scalar(
        select(func.count()).select_from(Participant).where(Participant.study_id == study.id)
    )
    assert total == 1  # only the pre-existing one: all or nothing


async def test_csv_import_rejects_bad_header_and_non_utf8(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, _, _, headers = await _coordinator(db, settings)
    wrong = await _import(client, study.id, "code,site\nA,LON\n", headers)
    assert wrong.status_code == 422
    assert wrong.json()["details"]["missing_columns"] == ["participant_code", "site_code"]
    binary = await client.post(
        "/api/participants/import",
        params={"study_id": str(study.id)},
        files={"file": ("x.csv", b"\xff\xfe\x00bad", "text/csv")},
        headers=headers,
    )
    assert binary.status_code == 422 and binary.json()["error_code"] == "invalid_csv"


async def test_contact_details_are_encrypted_at_rest_and_numbers_normalised(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    _, site, _, coordinator = await _coordinator(db, settings)
    participant = await factories.create_participant(db, site)
    url = f"/api/participants/{participant.id}/contact"

    saved = await client.put(
        url,
        json={"email": "sealed@example.org", "phone": "030 901820", "phone_region": "DE",
              "sms_opt_out": True},
        headers=coordinator,
    )  # fmt: skip
    refused = await client.put(url, json={"phone": "+999 123456789"}, headers=coordinator)

    assert saved.status_code == 200, saved.text
    assert saved.json()["phone"] == "+4930901820" and saved.json()["sms_opt_out"] is True
    assert refused.status_code == 422 and refused.json()["error_code"] == "invalid_phone"
    # What a database dump holds: ciphertext, no address or number in any column.
    row = (
        await db.execute(
            text("SELECT * FROM participant_contacts WHERE participant_id = :p"),
            {"p": participant.id},
        )
    ).one()
    dumped = repr(tuple(row)).encode()
    assert b"sealed@example.org" not in dumped and b"901820" not in dumped
    assert (await client.get(url, headers=coordinator)).json()["email"] == "sealed@example.org"
