"""Each staff action writes exactly one audit entry, through the API, in the request's own
transaction: logins, accounts, memberships, participants and every read of contact details."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit.models import AuditAction
from server.core.config import Settings
from server.core.crypto import token_box
from server.core.errors import Conflict
from server.main import create_app
from server.participants import contacts
from server.participants import router as participants_router
from server.participants.models import ParticipantContact
from server.redcap.models import RedcapConnection
from server.studies.models import Site, Study, StudyRole
from server.users.models import User
from tests import factories
from tests.audit_helpers import entries, only_entry, text_of
from tests.conftest import make_settings, use_test_session

EMAIL, PHONE = "ann.smith@example.org", "+44 20 7946 0123"
GOOD_PASSWORD = "Violet-staple-orbit-93"


async def _coordinator(
    db: AsyncSession, settings: Settings
) -> tuple[Study, Site, User, dict[str, str]]:
    study = await factories.create_study(db)
    site = await factories.create_site(db, study)
    user = await factories.create_user(db)
    await factories.add_member(db, study, user, StudyRole.coordinator)
    return study, site, user, await factories.auth_headers(db, settings, user)


async def test_login_records_its_user_and_address(client: AsyncClient, db: AsyncSession) -> None:
    user = await factories.create_user(db)

    response = await client.post(
        "/api/auth/login",
        data={"username": user.email, "password": factories.DEFAULT_PASSWORD},
        headers={"X-Request-ID": "login-req-1"},
    )

    assert response.status_code == 200, response.text
    entry = await only_entry(db, AuditAction.login_succeeded, user.id)
    assert (entry.actor_id, entry.object_type) == (user.id, "user")
    assert (entry.request_id, entry.client_ip) == ("login-req-1", "10.1.2.3")
    assert response.json()["access_token"] not in text_of(entry)


async def test_behind_a_trusted_proxy_the_entry_has_the_forwarded_address(
    db: AsyncSession, settings: Settings
) -> None:
    user = await factories.create_user(db)
    app = create_app(make_settings(settings.DATABASE_URL, TRUSTED_PROXIES="10.1.2.0/24"))
    use_test_session(app, db)
    transport = ASGITransport(app=app, client=("10.1.2.3", 1))
    try:
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await http.post(
                "/api/auth/login",
                data={"username": user.email, "password": factories.DEFAULT_PASSWORD},
                headers={"X-Forwarded-For": "203.0.113.9, 10.1.2.7"},
            )
    finally:
        await app.state.engine.dispose()
        await app.state.redis.aclose()

    assert response.status_code == 200, response.text
    assert (await only_entry(db, AuditAction.login_succeeded, user.id)).client_ip == "203.0.113.9"


@pytest.mark.parametrize("known", [True, False])
async def test_a_failed_login_is_recorded_without_email_or_password(
    client: AsyncClient, db: AsyncSession, known: bool
) -> None:
    user = await factories.create_user(db)
    email = user.email if known else f"nobody-{uuid.uuid4().hex[:6]}@example.org"

    response = await client.post(
        "/api/auth/login", data={"username": email, "password": "Wrong-guess-12345"}
    )

    assert response.status_code == 401
    assert response.json()["error_code"] == "invalid_credentials"
    found = [
        e
        for e in await entries(db, AuditAction.login_failed)
        if e.request_id == response.headers["x-request-id"]
    ]
    assert len(found) == 1
    entry = found[0]
    assert entry.summary == {"reason": "wrong_password" if known else "unknown_account"}
    assert entry.actor_id == (user.id if known else None)
    assert email not in text_of(entry) and "Wrong-guess" not in text_of(entry)


async def test_admin_creates_and_changes_accounts_on_the_record(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    admin = await factories.create_user(db, is_admin=True)
    headers = await factories.auth_headers(db, settings, admin)

    created = await client.post(
        "/api/users",
        json={"email": f"new-{uuid.uuid4().hex[:6]}@example.org", "password": GOOD_PASSWORD},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    updated = await client.patch(
        f"/api/users/{user_id}",
        json={"is_auditor": True, "password": "Another-long-phrase-77"},
        headers=headers,
    )
    assert updated.status_code == 200, updated.text

    made = await only_entry(db, AuditAction.user_created, user_id)
    assert made.actor_id == admin.id
    assert made.summary == {"is_admin": False, "is_auditor": False}
    changed = await only_entry(db, AuditAction.user_updated, user_id)
    assert changed.summary == {
        "fields": ["is_auditor", "password"],
        "is_auditor": {"from": False, "to": True},
    }
    assert "Another-long" not in text_of(changed)
    assert created.json()["email"] not in text_of(made) + text_of(changed)


async def test_membership_add_role_change_and_removal_each_write_one_entry(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, site, coordinator, headers = await _coordinator(db, settings)
    member = await factories.create_user(db)
    base = f"/api/studies/{study.id}/members"
    only_site = [str(site.id)]

    added = await client.post(
        base, json={"user_id": str(member.id), "role": "viewer"}, headers=headers
    )
    changed = await client.patch(
        f"{base}/{member.id}", json={"role": "researcher", "site_ids": only_site}, headers=headers
    )
    removed = await client.delete(f"{base}/{member.id}", headers=headers)

    assert [r.status_code for r in (added, changed, removed)] == [201, 200, 204]
    for action, summary in [
        (AuditAction.membership_added, {"role": "viewer", "site_ids": []}),
        (
            AuditAction.membership_role_changed,
            {"from": "viewer", "to": "researcher", "site_ids_from": [], "site_ids_to": only_site},
        ),
        (AuditAction.membership_removed, {"role": "researcher", "site_ids": only_site}),
    ]:
        entry = await only_entry(db, action, member.id)
        assert (entry.actor_id, entry.study_id, entry.summary) == (
            coordinator.id,
            study.id,
            summary,
        )


async def test_enrolment_records_the_participant_and_its_site(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, site, coordinator, headers = await _coordinator(db, settings)

    response = await client.post(
        "/api/participants",
        params={"study_id": str(study.id)},
        json={"site_id": str(site.id), "participant_code": "P-AUD-1", "contact": {"email": EMAIL}},
        headers=headers,
    )

    assert response.status_code == 201, response.text
    entry = await only_entry(db, AuditAction.participant_enrolled, response.json()["id"])
    assert (entry.actor_id, entry.study_id, entry.site_id) == (coordinator.id, study.id, site.id)
    assert entry.summary == {"status": "enrolled", "contact_fields": ["email"]}
    assert EMAIL not in text_of(entry)
    assert response.json()["access_code"] not in text_of(entry)


async def test_a_csv_import_writes_one_entry_a_dry_run_none(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, site, _, headers = await _coordinator(db, settings)
    content = (
        f"participant_code,site_code,email\nP-CSV-1,{site.code},{EMAIL}\nP-CSV-2,{site.code},\n"
    )

    for dry_run in (True, False):
        response = await client.post(
            "/api/participants/import",
            params={"study_id": str(study.id), "dry_run": str(dry_run).lower()},
            files={"file": ("participants.csv", content.encode(), "text/csv")},
            headers=headers,
        )
        assert response.status_code == 200, response.text

    entry = await only_entry(db, AuditAction.participants_imported, study.id)
    assert entry.summary == {"created": 2, "total_rows": 2}
    assert EMAIL not in text_of(entry)


@pytest.mark.parametrize(
    "body, action, summary",
    [
        (
            {"status": "active"},
            AuditAction.participant_updated,
            {"from": "enrolled", "to": "active"},
        ),
        (
            {"status": "withdrawn"},
            AuditAction.participant_withdrawn,
            {"from": "enrolled", "to": "withdrawn"},
        ),
    ],
)
async def test_a_status_change_and_a_withdrawal_are_recorded(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    body: dict[str, str],
    action: AuditAction,
    summary: dict[str, str],
) -> None:
    _, site, coordinator, headers = await _coordinator(db, settings)
    participant = await factories.create_participant(db, site)

    response = await client.patch(f"/api/participants/{participant.id}", json=body, headers=headers)

    assert response.status_code == 200, response.text
    entry = await only_entry(db, action, participant.id)
    assert entry.summary == {"fields": ["status"], "status": summary}
    assert (entry.actor_id, entry.site_id) == (coordinator.id, site.id)
    other = (
        AuditAction.participant_updated
        if action != AuditAction.participant_updated
        else AuditAction.participant_withdrawn
    )
    assert await entries(db, other, participant.id) == []


async def test_every_read_of_contact_details_is_recorded_without_them(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    _, site, coordinator, headers = await _coordinator(db, settings)
    participant = await factories.create_participant(db, site, email=EMAIL, phone=PHONE)
    url = f"/api/participants/{participant.id}/contact"

    reads = [await client.get(url, headers=headers) for _ in range(2)]
    written = await client.put(url, json={"phone": PHONE}, headers=headers)

    assert [r.status_code for r in reads] == [200, 200] and reads[0].json()["email"] == EMAIL
    assert written.status_code == 200
    read_entries = await entries(db, AuditAction.contact_read, participant.id)
    assert [e.summary for e in read_entries] == [{"fields": ["email", "phone"]}] * 2
    assert {e.actor_id for e in read_entries} == {coordinator.id}
    update = await only_entry(db, AuditAction.contact_updated, participant.id)
    assert update.summary == {"fields": ["phone"]}
    for entry in [*read_entries, update]:
        assert EMAIL not in text_of(entry) and PHONE not in text_of(entry)


async def test_a_request_that_fails_after_recording_leaves_no_entry_and_no_change(
    client: AsyncClient, db: AsyncSession, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, site, _, headers = await _coordinator(db, settings)
    participant = await factories.create_participant(db, site, email=EMAIL)

    record = participants_router._record_contact

    async def record_then_fail(*args: Any, **kwargs: Any) -> None:
        await record(*args, **kwargs)
        raise Conflict("Failing after the audit entry was written.")

    # The route records, then fails while answering: the entry goes with the change.
    monkeypatch.setattr(participants_router, "_record_contact", record_then_fail)
    response = await client.put(
        f"/api/participants/{participant.id}/contact", json={"phone": PHONE}, headers=headers
    )

    assert response.status_code == 409
    assert await entries(db, AuditAction.contact_updated, participant.id) == []
    contact = await db.get(ParticipantContact, participant.id, populate_existing=True)
    assert contact is not None
    details = contacts.read(contact, settings)
    assert (details.email, details.phone) == (EMAIL, None)


async def test_a_refused_request_writes_nothing(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, _, coordinator, headers = await _coordinator(db, settings)

    again = await client.post(
        f"/api/studies/{study.id}/members",
        json={"user_id": str(coordinator.id), "role": "viewer"},
        headers=headers,
    )

    assert again.status_code == 409
    assert await entries(db, AuditAction.membership_added, coordinator.id) == []


async def test_a_redcap_push_request_records_who_and_the_filters(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, site, coordinator, headers = await _coordinator(db, settings)
    db.add(RedcapConnection(study_id=study.id, api_url="https://redcap.example.org/api/",
                            token_encrypted=token_box(settings).encrypt("0" * 32),
                            token_last4="0000"))  # fmt: skip
    await db.flush()

    response = await client.post(
        "/api/exports/redcap-pushes",
        params={"study_id": str(study.id)},
        json={"site_ids": [str(site.id)], "date_from": "2026-11-01"},
        headers=headers,
    )

    assert response.status_code == 202, response.text
    entry = await only_entry(db, AuditAction.redcap_push_requested, response.json()["id"])
    assert (entry.actor_id, entry.object_type, entry.study_id) == (
        coordinator.id, "redcap_push", study.id,
    )  # fmt: skip
    assert entry.summary["filters"]["site_ids"] == [str(site.id)]
    assert entry.summary["filters"]["date_from"] == "2026-11-01"
