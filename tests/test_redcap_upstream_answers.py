"""What a server at a REDCap URL sends back reaches the coordinator only as REDCap's own error
message (issue 11.4): a redirect is never followed, and a proxy's HTML page, its status line
or any other body is not echoed. In every environment; local servers only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from tests.fake_upstream import Answer, FakeUpstream, fake_upstream
from tests.test_redcap_support import World, make_world

TOKEN = "0123456789ABCDEF0123456789ABCDEF"
SECRET = "intranet-wiki.corp"  # stands for what an internal page would give away
HTML_PAGE = f"<html><body><h1>Bad Gateway</h1><p>upstream {SECRET} at 10.0.0.7</p></body></html>"


@pytest.fixture
async def world(db: AsyncSession, settings: Settings) -> World:
    return await make_world(db, settings)


@pytest.fixture
def elsewhere() -> Iterator[FakeUpstream]:
    """Where a redirect points: another host name, another port (127.0.0.1 all the same)."""
    with fake_upstream(Answer(200, body=b'{"project_title": "followed"}')) as server:
        yield server


async def connect_and_test(client: AsyncClient, world: World, api_url: str) -> dict[str, object]:
    """Create a connection to `api_url` and test it: the error envelope of the test."""
    created = await client.post(
        "/api/redcap/connections",
        params={"study_id": str(world.study.id)},
        json={"api_url": api_url, "token": TOKEN},
        headers=world.headers,
    )
    assert created.status_code == 201, created.text
    tested = await client.post(
        f"/api/redcap/connections/{created.json()['id']}/test", headers=world.headers
    )
    assert tested.status_code == 502, tested.text
    envelope: dict[str, object] = tested.json()
    assert envelope["error_code"] == "redcap_error"
    return envelope


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_not_followed_and_the_answer_says_so(
    client: AsyncClient, world: World, elsewhere: FakeUpstream, status: int
) -> None:
    target = elsewhere.url(host="localhost")
    with fake_upstream(Answer(status, headers={"Location": target})) as redirecting:
        envelope = await connect_and_test(client, world, redirecting.url())
        assert redirecting.requests == ["/api/"]
    assert elsewhere.connections == 0  # the token never went where the redirect pointed
    message = str(envelope["message"])
    assert message.startswith(f"REDCap answered HTTP {status} ")
    assert "redirect, which is not followed" in message and target not in message
    assert envelope["details"] == {"redcap_status": status}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (502, "REDCap answered HTTP 502 Bad Gateway"),
        (504, "REDCap answered HTTP 504 Gateway Timeout"),
        (404, "REDCap answered HTTP 404 Not Found: is the API URL right?"),
        (400, "REDCap's answer (HTTP 400) was not an API answer: is the API URL right?"),
        (200, "REDCap's answer (HTTP 200) was not an API answer: is the API URL right?"),
    ],
)
async def test_an_upstream_html_page_is_not_echoed(
    client: AsyncClient, world: World, status: int, expected: str
) -> None:
    # A proxy's error page, with a status line of its own wording.
    answer = Answer(
        status,
        reason=f"Gateway to {SECRET}",
        headers={"Content-Type": "text/html"},
        body=HTML_PAGE.encode(),
    )
    with fake_upstream(answer) as proxy:
        envelope = await connect_and_test(client, world, proxy.url())
    assert envelope["message"] == expected
    assert SECRET not in str(envelope) and "10.0.0.7" not in str(envelope)


async def test_json_that_is_not_redcaps_is_not_shown(client: AsyncClient, world: World) -> None:
    answer = Answer(
        200, headers={"Content-Type": "application/json"}, body=b'["' + SECRET.encode() + b'"]'
    )
    with fake_upstream(answer) as other:
        envelope = await connect_and_test(client, world, other.url())
    assert envelope["message"] == "REDCap's answer was not an API answer: is the API URL right?"
    assert SECRET not in str(envelope)


async def test_redcaps_own_json_error_is_shown(client: AsyncClient, world: World) -> None:
    answer = Answer(
        403,
        headers={"Content-Type": "application/json"},
        body=b'{"error": "You do not have permissions to use the API"}',
    )
    with fake_upstream(answer) as redcap:
        envelope = await connect_and_test(client, world, redcap.url())
    assert envelope["message"] == "You do not have permissions to use the API"
    assert envelope["details"] == {"redcap_status": 403}
