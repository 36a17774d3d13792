"""Which consent document is in force, and what covers it (server/consent/rules.py)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from server.consent import service
from server.consent.models import DataUse
from server.consent.rules import PublishedDoc, Signed, verdict
from server.consent.schemas import WithdrawalIn
from tests import consent_factories as consent
from tests import factories

SITE, OTHER_SITE = uuid.uuid4(), uuid.uuid4()


def _doc(version: int, *, reconsent: bool = True, site=None, language=None) -> PublishedDoc:  # type: ignore[no-untyped-def]
    return PublishedDoc(uuid.uuid4(), site, language, version, reconsent)


def _signed(doc: PublishedDoc) -> Signed:
    return Signed(record_id=uuid.uuid4(), document_id=doc.id)


def test_no_documents_no_gate() -> None:
    assert verdict([], [], site_id=SITE, language=None).satisfied


def test_a_version_without_reconsent_after_one_with_still_needs_the_one_with() -> None:
    v1, v2, v3 = _doc(1), _doc(2, reconsent=True), _doc(3, reconsent=False)
    assert not verdict([v1, v2, v3], [_signed(v1)], site_id=SITE, language=None).satisfied
    signed_v2 = _signed(v2)
    found = verdict([v1, v2, v3], [_signed(v1), signed_v2], site_id=SITE, language=None)
    assert found.satisfied and found.covered_by == signed_v2.record_id
    assert found.in_force == v3


def test_a_signature_on_another_track_covers_nothing() -> None:
    study_wide, at_site = _doc(1), _doc(1, site=SITE)
    found = verdict([study_wide, at_site], [_signed(study_wide)], site_id=SITE, language=None)
    assert found.in_force == at_site and not found.satisfied
    # At another site the study-wide document is the one in force, and it is signed.
    elsewhere = verdict(
        [study_wide, at_site], [_signed(study_wide)], site_id=OTHER_SITE, language=None
    )
    assert elsewhere.in_force == study_wide and elsewhere.satisfied


def test_documents_none_of_which_fit_gate_everyone_out() -> None:
    german = _doc(1, language="de")
    found = verdict([german], [], site_id=SITE, language="fr")
    assert found.gated and found.in_force is None and not found.satisfied
    assert verdict([german], [], site_id=SITE, language="de").in_force == german


async def test_signatures_are_never_changed(db: AsyncSession) -> None:
    study = await factories.create_study(db)
    participant = await factories.create_participant(db, await factories.create_site(db, study))
    record = await consent.sign(db, participant, await consent.create_document(db, study))
    savepoint = await db.begin_nested()
    with pytest.raises(DBAPIError, match="consent history is never changed"):
        await db.execute(
            text("UPDATE consent_records SET attestation = 'x' WHERE id = :id"), {"id": record.id}
        )
    await savepoint.rollback()


async def test_data_use_for_exports_is_the_latest_withdrawal(db: AsyncSession) -> None:
    study = await factories.create_study(db)
    site = await factories.create_site(db, study)
    await factories.create_participant(db, site)  # stays
    leaves = await factories.create_participant(db, site)
    await service.withdraw(
        db,
        participant_id=leaves.id,
        withdrawal_in=WithdrawalIn(reason="r", data_use=DataUse.until_withdrawal),
        by=None,
    )
    uses = await service.data_use_of(db, study_id=study.id)
    assert set(uses) == {leaves.id} and uses[leaves.id][0] == DataUse.until_withdrawal
