"""GET /api/audit and its CSV export: administrators and auditors only, filtered, paged."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import timedelta

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit import service as audit
from server.audit.models import AuditAction, AuditEntry
from server.core.config import Settings
from server.studies.models import StudyRole
from tests import factories
from tests.audit_helpers import only_entry


async def _seed(db: AsyncSession) -> tuple[uuid.UUID, uuid.UUID, list[AuditEntry]]:
    """Five entries of one fresh study (two of them by one actor), one of another study."""
    study, other_study, actor = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    seqs = []
    for n, (action, who) in enumerate(
        [
            (AuditAction.contact_read, actor),
            (AuditAction.participant_enrolled, None),
            (AuditAction.contact_read, None),
            (AuditAction.contact_read, actor),
            (AuditAction.membership_added, None),
        ]
    ):
        seqs.append(
            await audit.record(
                db,
                action=action,
                actor_id=who,
                object_type="participant",
                object_id=f"obj-{n}",
                study_id=study,
                summary={"n": n},
            )
        )
    await audit.record(
        db, action=AuditAction.contact_read, object_type="participant", study_id=other_study
    )
    rows = [await db.get_one(AuditEntry, seq) for seq in seqs]
    return study, actor, rows


async def _reader(db: AsyncSession, settings: Settings, *, auditor: bool) -> dict[str, str]:
    user = await factories.create_user(db, is_admin=not auditor)
    user.is_auditor = auditor
    await db.flush()
    return await factories.auth_headers(db, settings, user)


@pytest.mark.parametrize("auditor", [True, False])
async def test_admins_and_auditors_page_through_a_study_newest_first(
    client: AsyncClient, db: AsyncSession, settings: Settings, auditor: bool
) -> None:
    study, _, rows = await _seed(db)
    headers = await _reader(db, settings, auditor=auditor)

    seen, cursor = [], None
    while True:
        params = {"study_id": str(study), "limit": "2", **({"cursor": cursor} if cursor else {})}
        response = await client.get("/api/audit", params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 2
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert [e["seq"] for e in seen] == [r.seq for r in reversed(rows)]
    first = seen[-1]
    assert first["hash"] == rows[0].hash.hex() and len(first["hash"]) == 64
    assert first["summary"] == {"n": 0} and first["object_id"] == "obj-0"


async def test_filters_narrow_by_actor_action_object_and_dates(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, actor, rows = await _seed(db)
    headers = await _reader(db, settings, auditor=True)

    async def seqs(**params: str) -> list[int]:
        response = await client.get(
            "/api/audit", params={"study_id": str(study), **params}, headers=headers
        )
        assert response.status_code == 200, response.text
        return [e["seq"] for e in response.json()["items"]]

    assert await seqs(actor_id=str(actor)) == [rows[3].seq, rows[0].seq]
    assert await seqs(action="contact_read") == [rows[3].seq, rows[2].seq, rows[0].seq]
    assert await seqs(object_type="participant", object_id="obj-1") == [rows[1].seq]
    since, until = rows[1].occurred_at, rows[3].occurred_at
    assert await seqs(since=since.isoformat(), until=until.isoformat()) == [
        rows[2].seq,
        rows[1].seq,
    ]
    assert await seqs(until=(rows[0].occurred_at - timedelta(seconds=1)).isoformat()) == []


@pytest.mark.parametrize(
    "params, field",
    [
        ({"cursor": "not-a-seq"}, "cursor"),
        ({"action": "made_up"}, "action"),
        ({"since": "2026-01-01T00:00:00"}, "since"),  # no timezone: refused, not guessed
        ({"study_id": "12"}, "study_id"),
        ({"limit": "0"}, "limit"),
    ],
)
async def test_bad_filters_are_422_naming_the_parameter(
    client: AsyncClient, db: AsyncSession, settings: Settings, params: dict[str, str], field: str
) -> None:
    headers = await _reader(db, settings, auditor=True)

    for path in ("/api/audit", "/api/audit/export.csv"):
        if path.endswith("csv") and field in ("cursor", "limit"):
            continue
        response = await client.get(path, params=params, headers=headers)
        assert response.status_code == 422, response.text
        body = response.json()
        assert set(body) == {"error_code", "message", "correlation_id", "details"}
        assert field in str(body["details"])


@pytest.mark.parametrize("role", [StudyRole.coordinator, StudyRole.viewer, None])
async def test_other_staff_get_403_and_no_credentials_401(
    client: AsyncClient, db: AsyncSession, settings: Settings, role: StudyRole | None
) -> None:
    study = await factories.create_study(db)
    user = await factories.create_user(db)
    if role is not None:
        await factories.add_member(db, study, user, role)
    headers = await factories.auth_headers(db, settings, user)

    for path in ("/api/audit", "/api/audit/export.csv"):
        denied = await client.get(path, params={"study_id": str(study.id)}, headers=headers)
        anonymous = await client.get(path)
        assert (denied.status_code, anonymous.status_code) == (403, 401)
        assert denied.json()["error_code"] == "forbidden"


async def test_an_auditor_reads_the_trail_and_nothing_else(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study = await factories.create_study(db)
    headers = await _reader(db, settings, auditor=True)

    assert (await client.get("/api/users", headers=headers)).status_code == 403
    assert (await client.get(f"/api/studies/{study.id}", headers=headers)).status_code == 404
    assert (await client.get("/api/dead-letters", headers=headers)).status_code == 403


async def test_the_csv_export_holds_the_filtered_range_and_is_itself_recorded(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, actor, rows = await _seed(db)
    auditor = await factories.create_user(db)
    auditor.is_auditor = True
    headers = await factories.auth_headers(db, settings, auditor)

    response = await client.get(
        "/api/audit/export.csv",
        params={"study_id": str(study), "action": "contact_read"},
        headers=headers,
    )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert [int(r["seq"]) for r in table] == [rows[0].seq, rows[2].seq, rows[3].seq]
    assert table[0]["actor_id"] == str(actor) and table[1]["actor_id"] == ""
    assert table[0]["summary"] == '{"n":0}' and table[0]["hash"] == rows[0].hash.hex()
    exported = await only_entry(db, AuditAction.audit_exported)
    assert exported.actor_id == auditor.id and exported.study_id == study
    assert exported.summary == {
        "entries": 3,
        "filters": {"study_id": str(study), "action": "contact_read"},
    }
