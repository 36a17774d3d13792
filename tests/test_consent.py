"""Consent (issue 14.4-6): the session-start gate, re-consent, history, withdrawal, the PDF."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from httpx import AsyncClient
from pypdf import PdfReader
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.assessment_sessions.models import AssessmentSession
from server.audit.models import AuditEntry
from server.consent.models import ConsentRecord
from server.core.config import Settings
from server.demo import seed_demo_consent
from server.participants.models import Participant, ParticipantStatus
from server.schedules.models import VisitOccurrence, VisitStatus
from server.studies.models import StudyRole
from tests import consent_factories as consent
from tests import factories
from tests import ingest_factories as ingest
from tests import schedule_factories as sched


def _start(battery_id: uuid.UUID) -> dict[str, Any]:
    return {
        "session_id": str(uuid.uuid4()),
        "battery_id": str(battery_id),
        "app_version": "2.3.1",
        "client_started_at": datetime.now(UTC).isoformat(),
    }


async def _world(db: AsyncSession, settings: Settings) -> dict[str, Any]:
    study = await factories.create_study(db)
    site = await factories.create_site(db, study)
    participant = await factories.create_participant(db, site)
    battery = await ingest.create_battery(db, study, await ingest.standard_modules(db))
    coordinator = await factories.create_user(db)
    await factories.add_member(db, study, coordinator, StudyRole.coordinator)
    return {
        "study": study,
        "site": site,
        "participant": participant,
        "battery": battery,
        "me": await ingest.participant_headers(db, settings, participant),
        "staff": await factories.auth_headers(db, settings, coordinator),
    }


async def _publish(client: AsyncClient, w: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body = {"title": "Consent", "body": "Text of the consent.", **fields}
    created = await client.post(
        "/api/consent/documents",
        params={"study_id": str(w["study"].id)},
        json=body,
        headers=w["staff"],
    )
    assert created.status_code == 201, created.text
    published = await client.post(
        f"/api/consent/documents/{created.json()['id']}/publish", headers=w["staff"]
    )
    assert published.status_code == 200, published.text
    document: dict[str, Any] = published.json()
    return document


async def _sign(client: AsyncClient, w: dict[str, Any], document_id: str) -> dict[str, Any]:
    signed = await client.post(
        "/api/consent/me/sign",
        headers=w["me"],
        json={
            "document_id": document_id,
            "attestation": {"kind": "typed_name", "value": "Ada Lovelace"},
            "app_version": "2.3.1",
        },
    )
    assert signed.status_code == 201, signed.text
    record: dict[str, Any] = signed.json()
    return record


async def test_a_study_without_consent_documents_has_no_gate(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    w = await _world(db, settings)
    started = await client.post("/api/session/start", json=_start(w["battery"].id), headers=w["me"])
    assert started.status_code == 201, started.text
    status = (await client.get("/api/consent/me", headers=w["me"])).json()
    assert status["consent_required"] is False and status["document"] is None


async def test_session_start_refused_before_consent_allowed_after_signing(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    w = await _world(db, settings)
    document = await _publish(client, w)
    assert document["version"] == 1
    start = _start(w["battery"].id)
    refused = await client.post("/api/session/start", json=start, headers=w["me"])
    assert refused.status_code == 403
    envelope = refused.json()
    assert envelope["error_code"] == "consent_required"
    assert "consent" in envelope["message"]
    assert envelope["details"] == {"document_id": document["id"], "version": 1}

    status = (await client.get("/api/consent/me", headers=w["me"])).json()
    assert status["consent_required"] is True
    assert status["document"]["id"] == document["id"]
    assert status["document"]["body"] == "Text of the consent."
    record = await _sign(client, w, document["id"])
    assert record["document_version"] == 1 and "attestation" not in record

    started = await client.post("/api/session/start", json=start, headers=w["me"])
    assert started.status_code == 201, started.text
    session = await db.get_one(AssessmentSession, uuid.UUID(start["session_id"]))
    assert session.consent_record_id == uuid.UUID(record["id"])
    assert (await client.get("/api/consent/me", headers=w["me"])).json()[
        "consent_required"
    ] is False


async def test_a_new_version_requiring_reconsent_asks_again_one_that_does_not_does_not(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    w = await _world(db, settings)
    first = await _publish(client, w)
    await _sign(client, w, first["id"])
    # A correction that needs no new signature: sessions go on.
    minor = await _publish(client, w, requires_reconsent=False)
    assert minor["version"] == 2
    ok = await client.post("/api/session/start", json=_start(w["battery"].id), headers=w["me"])
    assert ok.status_code == 201, ok.text
    # A substantive change: the next start asks again, for version 3.
    major = await _publish(client, w, requires_reconsent=True)
    assert major["version"] == 3
    start = _start(w["battery"].id)
    refused = await client.post("/api/session/start", json=start, headers=w["me"])
    assert refused.status_code == 403 and refused.json()["error_code"] == "consent_required"
    assert refused.json()["details"]["version"] == 3
    # Signing an older version is not signing the one in force.
    stale = await client.post(
        "/api/consent/me/sign",
        headers=w["me"],
        json={"document_id": first["id"], "attestation": {"value": "Ada Lovelace"}},
    )
    assert (
        stale.status_code == 409 and stale.json()["error_code"] == "consent_document_not_in_force"
    )
    await _sign(client, w, major["id"])
    assert (await client.post("/api/session/start", json=start, headers=w["me"])).status_code == 201


async def test_history_keeps_every_signature_even_of_the_same_version(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    w = await _world(db, settings)
    document = await _publish(client, w)
    one = await _sign(client, w, document["id"])
    two = await _sign(client, w, document["id"])
    history = await client.get(
        f"/api/consent/participants/{w['participant'].id}", headers=w["staff"]
    )
    assert history.status_code == 200, history.text
    records = history.json()["records"]
    assert [r["id"] for r in records] == [one["id"], two["id"]]
    assert {r["document_version"] for r in records} == {1}
    assert all("attestation" not in r for r in records)  # the typed name is the PDF's only
    actions = (
        await db.scalars(
            select(AuditEntry.action)
            .where(AuditEntry.study_id == w["study"].id)
            .order_by(AuditEntry.seq)
        )
    ).all()
    assert actions == [
        "consent_document_created",
        "consent_document_published",
        "consent_signed",
        "consent_signed",
    ]


async def test_a_published_document_never_changes(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    w = await _world(db, settings)
    document = await _publish(client, w)
    url = f"/api/consent/documents/{document['id']}"
    edit = await client.patch(url, json={"body": "Other text."}, headers=w["staff"])
    assert edit.status_code == 409 and edit.json()["error_code"] == "consent_document_published"
    again = await client.post(f"{url}/publish", headers=w["staff"])
    assert again.status_code == 409


async def test_the_document_of_the_participants_site_and_language_is_in_force(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    w = await _world(db, settings)
    participant = await db.get_one(Participant, w["participant"].id)
    participant.language = "de"
    await db.flush()
    await _publish(client, w)  # study-wide, any language
    german = await _publish(client, w, language="de")
    await _publish(client, w, language="fr")
    status = (await client.get("/api/consent/me", headers=w["me"])).json()
    assert status["document"]["id"] == german["id"]
    at_site = await _publish(client, w, language="de", site_id=str(w["site"].id))
    status = (await client.get("/api/consent/me", headers=w["me"])).json()
    assert status["document"]["id"] == at_site["id"]
    assert at_site["version"] == 1  # a track of its own


async def test_participant_withdraws_with_a_reason_and_a_data_use_choice(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    w = await _world(db, settings)
    document = await _publish(client, w)
    await _sign(client, w, document["id"])
    withdrawn = await client.post(
        "/api/consent/me/withdraw",
        headers=w["me"],
        json={"reason": "Moving abroad", "data_use": "until_withdrawal"},
    )
    assert withdrawn.status_code == 201, withdrawn.text
    body = withdrawn.json()
    assert body["data_use"] == "until_withdrawal" and body["withdrawn_by"] is None
    assert body["previous_status"] == "enrolled"
    participant = await db.get_one(Participant, w["participant"].id, populate_existing=True)
    assert participant.status == ParticipantStatus.withdrawn
    # The participant's login ended with their consent: nothing follows.
    after = await client.post("/api/session/start", json=_start(w["battery"].id), headers=w["me"])
    assert after.status_code == 401
    history = (
        await client.get(f"/api/consent/participants/{participant.id}", headers=w["staff"])
    ).json()
    assert history["status"]["withdrawn"] is True
    assert [x["data_use"] for x in history["withdrawals"]] == ["until_withdrawal"]
    entry = await db.scalar(
        select(AuditEntry).where(
            AuditEntry.action == "consent_withdrawn", AuditEntry.object_id == str(participant.id)
        )
    )
    assert entry is not None and entry.actor_id is None
    assert entry.summary["data_use"] == "until_withdrawal" and "reason" not in entry.summary


async def test_coordinator_withdraws_on_behalf_researcher_may_not(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    w = await _world(db, settings)
    researcher = await factories.create_user(db)
    await factories.add_member(db, w["study"], researcher, StudyRole.researcher)
    url = f"/api/consent/participants/{w['participant'].id}/withdraw"
    body = {"reason": "Asked by phone", "data_use": "none"}
    denied = await client.post(
        url, json=body, headers=await factories.auth_headers(db, settings, researcher)
    )
    assert denied.status_code == 403
    done = await client.post(url, json=body, headers=w["staff"])
    assert done.status_code == 201, done.text
    assert done.json()["withdrawn_by"] is not None and done.json()["data_use"] == "none"
    twice = await client.post(url, json=body, headers=w["staff"])
    assert twice.status_code == 409 and twice.json()["error_code"] == "already_withdrawn"


async def test_a_participant_token_reads_only_its_own_consent(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    w = await _world(db, settings)
    other = await factories.create_participant(db, w["site"])
    # Staff routes take a staff token: a participant's is refused whoever it names.
    for participant_id in (w["participant"].id, other.id):
        seen = await client.get(f"/api/consent/participants/{participant_id}", headers=w["me"])
        assert seen.status_code in (401, 403)
    record = await consent.sign(db, other, await consent.create_document(db, w["study"]))
    pdf = await client.get(f"/api/consent/records/{record.id}/pdf", headers=w["me"])
    assert pdf.status_code in (401, 403)
    mine = (await client.get("/api/consent/me", headers=w["me"])).json()
    assert mine["latest_record"] is None  # the other participant's signature is not shown


async def test_site_scoped_coordinator_sees_only_own_sites_consent(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    w = await _world(db, settings)
    site_b = await factories.create_site(db, w["study"])
    participant_b = await factories.create_participant(db, site_b)
    scoped = await factories.create_user(db)
    await factories.add_member(db, w["study"], scoped, StudyRole.coordinator, sites=[w["site"]])
    headers = await factories.auth_headers(db, settings, scoped)
    own = await client.get(f"/api/consent/participants/{w['participant'].id}", headers=headers)
    assert own.status_code == 200
    other = await client.get(f"/api/consent/participants/{participant_b.id}", headers=headers)
    assert other.status_code == 404
    doc_b = await consent.create_document(db, w["study"], site=site_b)
    listed = await client.get(
        "/api/consent/documents", params={"study_id": str(w["study"].id)}, headers=headers
    )
    assert doc_b.id not in {uuid.UUID(d["id"]) for d in listed.json()}
    create = await client.post(
        "/api/consent/documents",
        params={"study_id": str(w["study"].id)},
        json={"title": "t", "body": "b"},
        headers=headers,
    )
    assert create.status_code == 403 and create.json()["error_code"] == "site_scoped"


async def test_offline_session_start_before_consent_is_rejected_as_an_item(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    w = await _world(db, settings)
    document = await _publish(client, w)
    items = [{"type": "session_start", "data": _start(w["battery"].id)}]
    synced = await client.post("/api/sync", json={"items": items}, headers=w["me"])
    assert synced.status_code == 200, synced.text
    item = synced.json()["items"][0]
    assert item["status"] == "rejected" and item["error"]["error_code"] == "consent_required"
    await _sign(client, w, document["id"])
    again = await client.post("/api/sync", json={"items": items}, headers=w["me"])
    assert again.json()["items"][0]["status"] == "stored"


async def test_pdf_of_a_signed_record(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    w = await _world(db, settings)
    document = await _publish(
        client, w, body="Purpose of the study.\n\nYou may withdraw at any time <without> reason."
    )
    record = await _sign(client, w, document["id"])
    response = await client.get(f"/api/consent/records/{record['id']}/pdf", headers=w["staff"])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)
    for expected in (
        "Purpose of the study.",
        "<without> reason",
        "version 1",
        "Ada Lovelace",
        w["participant"].participant_code,
        record["id"],
        "2.3.1",
    ):
        assert expected in text, expected
    signed_at = await db.scalar(
        select(ConsentRecord.signed_at).where(ConsentRecord.id == uuid.UUID(record["id"]))
    )
    assert signed_at is not None and signed_at.strftime("%Y-%m-%d %H:%M:%S") in text
    reads = await db.scalar(
        select(func.count()).where(
            AuditEntry.action == "consent_pdf_read", AuditEntry.object_id == record["id"]
        )
    )
    assert reads == 1


async def test_demo_participants_have_signed_the_demo_consent(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    w = await _world(db, settings)
    await seed_demo_consent(db, study_id=w["study"].id, participants=[w["participant"]])
    status = (await client.get("/api/consent/me", headers=w["me"])).json()
    assert status["consent_required"] is False and status["document"]["version"] == 1
    started = await client.post("/api/session/start", json=_start(w["battery"].id), headers=w["me"])
    assert started.status_code == 201, started.text


async def test_withdrawal_cancels_future_visits_and_keeps_past_ones(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    w = await _world(db, settings)
    document = await _publish(client, w)
    await _sign(client, w, document["id"])
    protocol, visits = await sched.create_protocol(db, w["study"], w["battery"])
    now = datetime.now(UTC)
    past = await sched.create_occurrence(
        db, w["participant"], protocol, visits[0], start=now - timedelta(days=3)
    )
    past.status = VisitStatus.missed
    open_now = await sched.create_occurrence(
        db, w["participant"], protocol, visits[1], start=now - timedelta(hours=1)
    )
    future = await sched.create_occurrence(
        db, w["participant"], protocol, visits[2], start=now + timedelta(days=20)
    )
    await db.flush()
    withdrawn = await client.post(
        f"/api/consent/participants/{w['participant'].id}/withdraw",
        headers=w["staff"],
        json={"reason": "No longer wishes to take part", "data_use": "all_data"},
    )
    assert withdrawn.status_code == 201, withdrawn.text
    statuses = {
        row.id: row.status
        for row in (
            await db.scalars(
                select(VisitOccurrence)
                .where(VisitOccurrence.participant_id == w["participant"].id)
                .execution_options(populate_existing=True)
            )
        ).all()
    }
    assert statuses == {
        past.id: VisitStatus.missed,
        open_now.id: VisitStatus.cancelled,
        future.id: VisitStatus.cancelled,
    }
    entry = await db.scalar(
        select(AuditEntry).where(
            AuditEntry.action == "consent_withdrawn",
            AuditEntry.object_id == str(w["participant"].id),
        )
    )
    assert entry is not None and entry.summary["visits_cancelled"] == 2
