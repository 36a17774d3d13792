"""REDCap connections: created, tested against the stand-in through PyCap, token kept secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.core.logging import build_handler
from server.redcap.models import RedcapConnection
from server.studies.models import StudyRole
from tests import factories
from tests.redcap_standin import RedcapStandin, classic_project, longitudinal_project
from tests.test_redcap_support import World, create_connection, make_world, running


@pytest.fixture
def classic() -> Iterator[RedcapStandin]:
    yield from running(classic_project())


@pytest.fixture
def longitudinal() -> Iterator[RedcapStandin]:
    yield from running(longitudinal_project())


@pytest.fixture
async def world(db: AsyncSession, settings: Settings) -> World:
    return await make_world(db, settings)


@pytest.fixture
def log_output(settings: Settings) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = build_handler(settings.model_copy(update={"LOG_JSON": True}), stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


async def test_create_test_and_read_a_connection_without_its_token(
    client: AsyncClient,
    db: AsyncSession,
    world: World,
    classic: RedcapStandin,
    log_output: io.StringIO,
) -> None:
    created = await create_connection(client, world, classic, max_calls_per_minute=90)
    assert created["token_last4"] == classic.token[-4:]
    assert created["project_title"] is None and created["site_id"] is None
    connection_id = created["id"]

    tested = await client.post(
        f"/api/redcap/connections/{connection_id}/test", headers=world.headers
    )
    assert tested.status_code == 200, tested.text
    result = tested.json()
    assert result["project_title"] == "Metricis demo (classic)"
    assert result["redcap_version"] == "14.5.10"
    assert result["is_longitudinal"] is False and result["has_repeating"] is True
    assert result["repeating_instruments"] == [
        {"form_name": "cognitive_session", "event_name": None}
    ]
    assert [c.content for c in classic.calls] == ["project", "version", "repeatingFormsEvents"]

    read = await client.get(f"/api/redcap/connections/{connection_id}", headers=world.headers)
    assert read.status_code == 200
    stored = read.json()
    assert stored["project_title"] == "Metricis demo (classic)"
    assert stored["redcap_version"] == "14.5.10" and stored["last_tested_at"]
    listed = await client.get(
        "/api/redcap/connections", params={"study_id": str(world.study.id)}, headers=world.headers
    )
    assert [c["id"] for c in listed.json()] == [connection_id]

    row = await db.get(RedcapConnection, connection_id)
    assert row is not None and classic.token.encode() not in row.token_encrypted
    # Never in an answer, never in the logs.
    output = log_output.getvalue()
    for text in (created, stored, result, listed.json(), output):
        assert classic.token not in json.dumps(text)
        assert classic.token.lower() not in json.dumps(text)
    events = {json.loads(line)["event"] for line in output.splitlines() if line.strip()}
    assert {"redcap_connection_created", "redcap_call"} <= events


async def test_longitudinal_project_is_reported(
    client: AsyncClient, world: World, longitudinal: RedcapStandin
) -> None:
    created = await create_connection(client, world, longitudinal)
    tested = await client.post(
        f"/api/redcap/connections/{created['id']}/test", headers=world.headers
    )
    result = tested.json()
    assert result["is_longitudinal"] is True
    assert {(r["form_name"], r["event_name"]) for r in result["repeating_instruments"]} == {
        ("cognitive_session", "baseline_arm_1"),
        ("cognitive_session", "month_6_arm_1"),
    }


async def test_bad_token_is_redcaps_403_message_in_a_502(
    client: AsyncClient, world: World, classic: RedcapStandin
) -> None:
    created = await create_connection(client, world, classic)
    patched = await client.patch(
        f"/api/redcap/connections/{created['id']}",
        json={"token": "0123456789ABCDEF0123456789ABCDEF"},
        headers=world.headers,
    )
    assert patched.status_code == 200 and patched.json()["token_last4"] == "CDEF"
    tested = await client.post(
        f"/api/redcap/connections/{created['id']}/test", headers=world.headers
    )
    assert tested.status_code == 502
    envelope = tested.json()
    assert envelope["error_code"] == "redcap_error"
    assert envelope["message"] == "You do not have permissions to use the API"
    assert envelope["details"] == {"redcap_status": 403}
    assert envelope["correlation_id"]


async def test_redcap_down_or_failing_is_a_502_never_a_500(
    client: AsyncClient, world: World, classic: RedcapStandin
) -> None:
    created = await create_connection(client, world, classic)
    url = f"/api/redcap/connections/{created['id']}/test"
    classic.fail(503, times=1)
    failing = await client.post(url, headers=world.headers)
    assert failing.status_code == 502 and failing.json()["error_code"] == "redcap_error"
    assert "503" in failing.json()["message"]
    classic.stop()
    down = await client.post(url, headers=world.headers)
    assert down.status_code == 502 and "could not be reached" in down.json()["message"]
    classic.start()
    assert (await client.post(url, headers=world.headers)).status_code == 200


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"api_url": "https://redcap.example.org/api"}, ["body", "api_url"]),
        ({"api_url": "ftp://redcap.example.org/api/"}, ["body", "api_url"]),
        ({"token": "0123456789ABCDEF0123456789ABCDEX"}, ["body", "token"]),
        ({"token": "0123456789ABCDEF"}, ["body", "token"]),
        ({"max_calls_per_minute": 0}, ["body", "max_calls_per_minute"]),
    ],
)
async def test_bad_url_or_token_is_422_naming_the_field(
    client: AsyncClient, world: World, body: dict[str, object], loc: list[str]
) -> None:
    good = {"api_url": "https://redcap.example.org/api/", "token": "A" * 32}
    response = await client.post(
        "/api/redcap/connections",
        params={"study_id": str(world.study.id)},
        json={**good, **body},
        headers=world.headers,
    )
    assert response.status_code == 422
    assert [d["loc"] for d in response.json()["details"]] == [loc]
    assert "0123456789ABCDEF" not in response.text


async def test_one_study_wide_connection_and_one_per_site(
    client: AsyncClient, db: AsyncSession, world: World, classic: RedcapStandin
) -> None:
    await create_connection(client, world, classic)
    site = await create_connection(client, world, classic, site_id=str(world.site_a.id))
    assert site["site_id"] == str(world.site_a.id)
    for body in ({}, {"site_id": str(world.site_a.id)}):
        again = await client.post(
            "/api/redcap/connections",
            params={"study_id": str(world.study.id)},
            json={"api_url": classic.url, "token": classic.token, **body},
            headers=world.headers,
        )
        assert again.status_code == 409
        assert again.json()["error_code"] == "redcap_connection_exists"
    other_study_site = await factories.create_site(db, await factories.create_study(db))
    foreign = await client.post(
        "/api/redcap/connections",
        params={"study_id": str(world.study.id)},
        json={"api_url": classic.url, "token": classic.token, "site_id": str(other_study_site.id)},
        headers=world.headers,
    )
    assert foreign.status_code == 422
    assert foreign.json()["details"][0]["loc"] == ["body", "site_id"]

    deleted = await client.delete(f"/api/redcap/connections/{site['id']}", headers=world.headers)
    assert deleted.status_code == 204
    gone = await client.get(f"/api/redcap/connections/{site['id']}", headers=world.headers)
    assert gone.status_code == 404


async def test_only_coordinators_change_connections_and_others_see_404(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    classic: RedcapStandin,
) -> None:
    created = await create_connection(client, world, classic)
    viewer = await factories.create_user(db)
    await factories.add_member(db, world.study, viewer, StudyRole.viewer)
    viewer_headers = await factories.auth_headers(db, settings, viewer)
    url = f"/api/redcap/connections/{created['id']}"
    assert (await client.get(url, headers=viewer_headers)).status_code == 200
    assert (await client.post(f"{url}/test", headers=viewer_headers)).status_code == 403
    assert (await client.delete(url, headers=viewer_headers)).status_code == 403
    outsider = await factories.create_user(db)
    other = await factories.create_study(db)
    await factories.add_member(db, other, outsider, StudyRole.coordinator)
    outsider_headers = await factories.auth_headers(db, settings, outsider)
    for method in ("GET", "PATCH", "DELETE"):
        response = await client.request(method, url, json={}, headers=outsider_headers)
        assert response.status_code == 404, method
        assert response.json()["message"] == "No such REDCap connection."
