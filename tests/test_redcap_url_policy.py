"""REDCap URLs are no way into the network (issue 11.4): under production settings a token is
sent only over https to public addresses, unless REDCAP_ALLOWED_HOSTS lists the host or its
address; checked when a connection is saved and again on the addresses each call connects to.

Every address here other than 127.0.0.1 is only ever refused, before anything connects.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import ConfigurationError, Settings, load_settings
from server.core.crypto import derived_dev_key
from server.redcap.sync import sync_submission
from tests.conftest import make_settings
from tests.fake_upstream import FakeUpstream, fake_upstream
from tests.redcap_standin import RedcapStandin, classic_project
from tests.test_redcap_support import (
    World,
    connect_and_map,
    direct_submission,
    imports,
    make_world,
    participant,
    running,
)

TOKEN = "0123456789ABCDEF0123456789ABCDEF"
SUMMARY = {"n_trials": 20, "mean_rt_ms": 301.5, "accuracy": 0.95}
Production = Callable[[str], Settings]


@pytest.fixture
def production(app_instance: FastAPI, database_url: str) -> Iterator[Production]:
    """Runs the app under production settings, REDCAP_ALLOWED_HOSTS as given (none at first)."""
    original = app_instance.state.settings

    def use(allowed_hosts: str) -> Settings:
        production_settings = make_settings(
            database_url,
            ENVIRONMENT="production",
            REDCAP_TOKEN_KEY=derived_dev_key("url-policy-tests"),
            REDCAP_ALLOWED_HOSTS=allowed_hosts,
            LOG_JSON=False,
        )
        app_instance.state.settings = production_settings
        return production_settings

    use("")
    yield use
    app_instance.state.settings = original


@pytest.fixture
async def world(db: AsyncSession, settings: Settings) -> World:
    return await make_world(db, settings)


@pytest.fixture
def standin() -> Iterator[RedcapStandin]:
    yield from running(classic_project())


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


async def create(client: AsyncClient, world: World, api_url: str, token: str = TOKEN) -> Response:
    return await client.post(
        "/api/redcap/connections",
        params={"study_id": str(world.study.id)},
        json={"api_url": api_url, "token": token},
        headers=world.headers,
    )


def refused_field(response: Response) -> str:
    """The reason a saved URL was refused: a validation error on api_url."""
    assert response.status_code == 422, response.text
    envelope = response.json()
    assert envelope["error_code"] == "validation_error"
    [detail] = envelope["details"]
    assert detail["loc"] == ["body", "api_url"] and detail["type"] == "redcap_url_refused"
    assert detail["msg"] == envelope["message"]
    return str(envelope["message"])


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("127.0.0.1", "a loopback address"),
        ("2130706433", "a loopback address"),  # 127.0.0.1 spelt as one number
        ("localhost", "a loopback address"),  # a name: what it resolves to counts
        ("[::1]", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("192.168.0.10", "a private address"),
        ("[fd12:3456::1]", "a unique-local address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("[fd00:ec2::254]", "a cloud metadata address"),
        ("[::ffff:169.254.169.254]", "a cloud metadata address"),
        ("168.63.129.16", "a cloud metadata address"),
        ("[fe80::1]", "a link-local address"),
        ("0.0.0.0", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("100.64.0.1", "a non-public address"),
    ],
)
async def test_production_refuses_an_internal_address_when_saved(
    client: AsyncClient, world: World, production: Production, host: str, kind: str
) -> None:
    response = await create(client, world, f"https://{host}/api/")
    message = refused_field(response)
    verb = "resolves to" if host in ("localhost", "2130706433") else "is"
    assert f"{verb} {kind}" in message and "REDCAP_ALLOWED_HOSTS" in message
    listed = await client.get(
        "/api/redcap/connections", params={"study_id": str(world.study.id)}, headers=world.headers
    )
    assert listed.json() == []


async def test_production_refuses_http_unless_the_host_is_listed(
    client: AsyncClient, world: World, production: Production, standin: RedcapStandin
) -> None:
    message = refused_field(await create(client, world, standin.url, standin.token))
    assert "https" in message and "127.0.0.1" in message
    # The address listed in a network that holds it: http and the address both allowed.
    production("10.0.0.0/8, 127.0.0.0/8")
    created = await create(client, world, standin.url, standin.token)
    assert created.status_code == 201, created.text
    tested = await client.post(
        f"/api/redcap/connections/{created.json()['id']}/test", headers=world.headers
    )
    assert tested.status_code == 200, tested.text
    assert tested.json()["project_title"] == "Metricis demo (classic)"


async def test_a_host_listed_by_name_is_trusted_whatever_it_resolves_to(
    client: AsyncClient, world: World, production: Production, standin: RedcapStandin
) -> None:
    url = standin.url.replace("127.0.0.1", "localhost")
    assert "a loopback address" in refused_field(
        await create(client, world, url.replace("http:", "https:"), standin.token)
    )
    production("redcap.hospital.example, LOCALHOST")
    created = await create(client, world, url, standin.token)
    assert created.status_code == 201, created.text
    tested = await client.post(
        f"/api/redcap/connections/{created.json()['id']}/test", headers=world.headers
    )
    assert tested.status_code == 200, tested.text


async def test_every_call_checks_again(
    client: AsyncClient, world: World, production: Production, upstream: FakeUpstream
) -> None:
    production("127.0.0.1")
    created = await create(client, world, upstream.url(scheme="https"))
    assert created.status_code == 201, created.text
    production("")  # 127.0.0.1 no longer listed
    tested = await client.post(
        f"/api/redcap/connections/{created.json()['id']}/test", headers=world.headers
    )
    assert tested.status_code == 422, tested.text
    envelope = tested.json()
    assert envelope["error_code"] == "redcap_url_refused"
    assert "127.0.0.1 is a loopback address" in envelope["message"]
    assert envelope["details"] == {"host": "127.0.0.1"}
    assert upstream.connections == 0  # refused before connecting: the token went nowhere


async def test_a_sync_sends_nothing_where_it_is_no_longer_allowed(
    client: AsyncClient,
    db: AsyncSession,
    world: World,
    production: Production,
    standin: RedcapStandin,
) -> None:
    production("127.0.0.1")
    await connect_and_map(client, world, standin)
    submission = await direct_submission(
        db, world, await participant(db, world, "P-ANN"), summary=SUMMARY
    )
    worker_settings = production("")
    outcome = await sync_submission(db, worker_settings, submission)
    # Failed, not retried: nothing goes until the URL or the list changes, then a resync.
    assert outcome.status == "failed" and "must be reached over https" in (outcome.error or "")
    assert imports(standin) == []


@pytest.fixture
def rebinding_dns(monkeypatch: pytest.MonkeyPatch) -> list[list[str] | None]:
    """DNS for one made-up name, answering from a script (None: no such name); every other
    name resolves as usual. A DNS rebinding attack, played locally."""
    script: list[list[str] | None] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "redcap.rebinding.test":
            return real(host, port, *args, **kwargs)
        addresses = script.pop(0)
        if addresses is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return script


async def test_a_name_that_resolves_elsewhere_at_call_time_is_refused(
    client: AsyncClient,
    world: World,
    production: Production,
    upstream: FakeUpstream,
    rebinding_dns: list[list[str] | None],
) -> None:
    production("127.0.0.1")
    url = upstream.url(host="redcap.rebinding.test", scheme="https")
    rebinding_dns.append(["127.0.0.1"])  # when saved: a listed address
    created = await create(client, world, url)
    assert created.status_code == 201, created.text
    rebinding_dns.append(["10.9.8.7"])  # at the call: an internal one
    tested = await client.post(
        f"/api/redcap/connections/{created.json()['id']}/test", headers=world.headers
    )
    assert tested.status_code == 422, tested.text
    assert "redcap.rebinding.test resolves to a private address" in tested.json()["message"]
    assert rebinding_dns == []


async def test_a_call_connects_to_the_address_it_checked(
    client: AsyncClient,
    world: World,
    production: Production,
    upstream: FakeUpstream,
    rebinding_dns: list[list[str] | None],
) -> None:
    production("127.0.0.1")
    url = upstream.url(host="redcap.rebinding.test", scheme="https")
    # Saved; then the call's one lookup; a second lookup (to connect) would find no name.
    rebinding_dns.extend([["127.0.0.1"], ["127.0.0.1"], None])
    created = await create(client, world, url)
    assert created.status_code == 201, created.text
    tested = await client.post(
        f"/api/redcap/connections/{created.json()['id']}/test", headers=world.headers
    )
    # The checked address got the connection (its TLS hello: the fake speaks plain HTTP).
    assert upstream.connections == 1
    assert rebinding_dns == [None]
    assert tested.status_code == 502 and tested.json()["error_code"] == "redcap_error"


def test_allowed_hosts_setting_takes_names_addresses_and_networks() -> None:
    urls = {"DATABASE_URL": "postgresql+asyncpg://m@db/m", "REDIS_URL": "redis://r:6379/0"}
    loaded = load_settings(**urls, REDCAP_ALLOWED_HOSTS=" REDCap.Hospital.org., 10.20.0.0/16,[::1]")
    assert loaded.REDCAP_ALLOWED_HOSTS == ["redcap.hospital.org", "10.20.0.0/16", "::1"]
    with pytest.raises(ConfigurationError, match="REDCAP_ALLOWED_HOSTS"):
        load_settings(**urls, REDCAP_ALLOWED_HOSTS="https://redcap.hospital.org/api/")
