"""A participant's contact details go through the service path and never reach the logs."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.core.logging import build_handler
from server.studies.models import StudyRole
from tests import factories

EMAIL = "jane.doe.phi@example.org"
PHONE = "+44 20 7946 0958"
PASSWORD = "a-password-nobody-logs"


@pytest.fixture
def log_output(settings: Settings) -> Iterator[io.StringIO]:
    """Everything logged during the test, rendered as production renders it (JSON)."""
    stream = io.StringIO()
    handler = build_handler(settings.model_copy(update={"LOG_JSON": True}), stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


async def test_contact_details_never_logged(
    client: AsyncClient, db: AsyncSession, settings: Settings, log_output: io.StringIO
) -> None:
    study = await factories.create_study(db)
    site = await factories.create_site(db, study)
    user = await factories.create_user(db)
    await factories.add_member(db, study, user, StudyRole.coordinator)
    headers = await factories.auth_headers(db, settings, user)

    created = await client.post(
        "/api/participants",
        params={"study_id": str(study.id)},
        json={
            "site_id": str(site.id),
            "participant_code": "PHI-1",
            "contact": {"email": EMAIL, "phone": PHONE},
        },
        headers=headers,
    )
    assert created.status_code == 201
    participant_id = created.json()["id"]
    updated = await client.put(
        f"/api/participants/{participant_id}/contact",
        json={"email": "new." + EMAIL, "phone": PHONE},
        headers=headers,
    )
    assert updated.status_code == 200
    # A careless log call with PHI under obvious and less obvious keys.
    structlog.get_logger("test").info(
        "careless", email=EMAIL, contact={"phone": PHONE}, note=f"reach {EMAIL} or {PHONE}"
    )
    logging.getLogger("stdlib").warning("stdlib says %s", EMAIL)

    output = log_output.getvalue()
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    events = {line["event"] for line in lines}
    # The service path logged (so this test would see a leak), and nothing leaked.
    assert {"participant_enrolled", "participant_contact_updated", "request", "careless"} <= events
    assert any(line.get("participant_id") == participant_id for line in lines)
    for secret in (EMAIL, PHONE, "7946", "jane.doe"):
        assert secret not in output, f"{secret!r} reached the logs"
    assert headers["Authorization"].split()[1] not in output


async def test_login_logs_no_password_or_email(
    client: AsyncClient, db: AsyncSession, log_output: io.StringIO
) -> None:
    await factories.create_user(db, email="login.phi@example.org", password=PASSWORD)
    ok = await client.post(
        "/api/auth/login", data={"username": "login.phi@example.org", "password": PASSWORD}
    )
    assert ok.status_code == 200
    bad = await client.post(
        "/api/auth/login",
        data={"username": "login.phi@example.org", "password": "wrong-" + PASSWORD},
    )
    assert bad.status_code == 401
    output = log_output.getvalue()
    assert "login_succeeded" in output and "login_failed" in output
    for secret in ("login.phi", PASSWORD, ok.json()["access_token"], ok.json()["refresh_token"]):
        assert secret not in output
