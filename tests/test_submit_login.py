"""POST /api/submit checks the device's login with its insert (one round trip for both); a
login that has ended still answers 401, before anything the body would have answered."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from httpx import AsyncClient
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.core.models import utcnow
from server.outbox.models import OutboxEvent
from server.participant_auth.models import ParticipantLogin
from server.participants.models import Participant, ParticipantStatus
from server.submissions.models import Submission
from tests import factories
from tests import ingest_factories as ingest

Ending = Callable[[AsyncSession, Participant], Awaitable[None]]


async def _revoke(db: AsyncSession, participant: Participant) -> None:
    await db.execute(
        update(ParticipantLogin)
        .where(ParticipantLogin.participant_id == participant.id)
        .values(revoked_at=utcnow())
    )


async def _expire(db: AsyncSession, participant: Participant) -> None:
    await db.execute(
        update(ParticipantLogin)
        .where(ParticipantLogin.participant_id == participant.id)
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )


async def _withdraw(db: AsyncSession, participant: Participant) -> None:
    participant.status = ParticipantStatus.withdrawn
    await db.flush()


async def _complete(db: AsyncSession, participant: Participant) -> None:
    participant.status = ParticipantStatus.completed
    await db.flush()


@pytest.mark.parametrize("end", [_revoke, _expire, _withdraw, _complete])
async def test_an_ended_login_answers_401_first_and_stores_nothing(
    client: AsyncClient, db: AsyncSession, settings: Settings, end: Ending
) -> None:
    study = await factories.create_study(db)
    participant = await factories.create_participant(db, await factories.create_site(db, study))
    modules = await ingest.standard_modules(db)
    session = await ingest.start_session(
        db, participant, await ingest.create_battery(db, study, modules)
    )
    headers = await ingest.participant_headers(db, settings, participant)
    body = ingest.payload(session.id, modules, n_trials=12)
    stored = await client.post("/api/submit", json=body, headers=headers)
    assert stored.status_code == 201, stored.text
    await end(db, participant)

    fresh = {**body, "client_submission_id": "after-the-end"}
    unknown_session = {**fresh, "session_id": "00000000-0000-4000-8000-000000000000"}
    answers = {
        "new submission": await client.post("/api/submit", json=fresh, headers=headers),
        "replay": await client.post("/api/submit", json=body, headers=headers),
        "not JSON": await client.post(
            "/api/submit",
            content=b"{nope",
            headers={**headers, "Content-Type": "application/json"},
        ),
        "unknown session": await client.post("/api/submit", json=unknown_session, headers=headers),
    }
    for what, answer in answers.items():
        assert answer.status_code == 401, (what, answer.status_code, answer.text)
        assert answer.json()["message"] == "This participant login has ended.", what
    count = select(func.count()).select_from(Submission)
    assert await db.scalar(count.where(Submission.participant_id == participant.id)) == 1
    # archive, REDCap sync and scoring, of the one stored
    assert await db.scalar(select(func.count()).select_from(OutboxEvent)) == 3
