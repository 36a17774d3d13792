"""Web Push against a local push service: the payload encrypted for the browser's keys and
VAPID-signed; an expired subscription is permanent, a busy service transient."""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from py_vapid import Vapid
from pydantic import SecretStr

from server.core.config import Settings
from server.notifications.base import (
    PermanentDeliveryError,
    Sent,
    TransientDeliveryError,
)
from server.notifications.push import WebPushProvider, load_vapid_key
from tests.notification_factories import BODY, outgoing


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class PushEndpoint(ThreadingHTTPServer):
    """A push service: answers `status` to each POST and keeps its headers and body."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _PushHandler)
        self.status = 201
        self.received: list[tuple[dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/push/abc123"


class _PushHandler(BaseHTTPRequestHandler):
    server: PushEndpoint

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def push_endpoint() -> Iterator[PushEndpoint]:
    server = PushEndpoint()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def endpoint() -> Iterator[PushEndpoint]:
    with push_endpoint() as endpoint:
        yield endpoint


@pytest.fixture
def browser_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def auth_secret() -> bytes:
    return os.urandom(16)


@pytest.fixture
def push_settings(settings: Settings) -> Settings:
    vapid = Vapid()
    vapid.generate_keys()
    raw = vapid.private_key.private_numbers().private_value.to_bytes(32, "big")
    return settings.model_copy(
        update={
            "PUSH_PROVIDER": "webpush",
            "VAPID_PRIVATE_KEY": SecretStr(_b64url(raw)),
            "VAPID_SUBJECT": "mailto:team@metricis.test",
        }
    )


def push_public_key(settings: Settings) -> str:
    key = load_vapid_key(settings.VAPID_PRIVATE_KEY.get_secret_value()).public_key
    return _b64url(key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))


def subscription(
    endpoint: PushEndpoint, browser_key: ec.EllipticCurvePrivateKey, auth_secret: bytes
) -> str:
    public = browser_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return json.dumps(
        {
            "endpoint": endpoint.url,
            "keys": {"p256dh": _b64url(public), "auth": _b64url(auth_secret)},
        }
    )


async def test_push_is_delivered_encrypted_and_signed(
    endpoint: PushEndpoint,
    push_settings: Settings,
    browser_key: ec.EllipticCurvePrivateKey,
    auth_secret: bytes,
) -> None:
    to = subscription(endpoint, browser_key, auth_secret)

    sent = await WebPushProvider(push_settings).send(outgoing("push", to, subject="Visit 2"))

    assert sent == Sent("webpush", None)
    [(headers, body)] = endpoint.received
    assert headers["content-encoding"] == "aes128gcm"
    # Signed with our VAPID key, for this push service, naming our contact.
    scheme, _, params = headers["authorization"].partition(" ")
    fields = dict(part.split("=", 1) for part in params.split(","))
    assert scheme == "vapid"
    assert fields["k"] == push_public_key(push_settings)
    claims = json.loads(base64.urlsafe_b64decode(fields["t"].split(".")[1] + "=="))
    assert claims["sub"] == "mailto:team@metricis.test"
    assert claims["aud"] == endpoint.url.split("/push/")[0]
    # Only the browser's key opens it, and it holds what the service worker shows.
    plain = http_ece.decrypt(
        body, private_key=browser_key, auth_secret=auth_secret, version="aes128gcm"
    )
    assert json.loads(plain) == {"title": "Visit 2", "body": BODY}


async def test_push_to_an_expired_subscription_is_permanent(
    endpoint: PushEndpoint,
    push_settings: Settings,
    browser_key: ec.EllipticCurvePrivateKey,
    auth_secret: bytes,
) -> None:
    endpoint.status = 410

    with pytest.raises(PermanentDeliveryError) as caught:
        await WebPushProvider(push_settings).send(
            outgoing("push", subscription(endpoint, browser_key, auth_secret))
        )

    assert "subscription expired" in caught.value.reason
    assert endpoint.url not in caught.value.reason


@pytest.mark.parametrize("status", [429, 503])
async def test_push_busy_service_is_transient(
    endpoint: PushEndpoint,
    push_settings: Settings,
    browser_key: ec.EllipticCurvePrivateKey,
    auth_secret: bytes,
    status: int,
) -> None:
    endpoint.status = status

    with pytest.raises(TransientDeliveryError, match=str(status)):
        await WebPushProvider(push_settings).send(
            outgoing("push", subscription(endpoint, browser_key, auth_secret))
        )


async def test_push_to_a_malformed_subscription_is_permanent(push_settings: Settings) -> None:
    with pytest.raises(PermanentDeliveryError, match="invalid push subscription"):
        await WebPushProvider(push_settings).send(outgoing("push", '{"endpoint": 1}'))


def test_vapid_key_is_read_as_pem_or_base64url() -> None:
    vapid = Vapid()
    vapid.generate_keys()
    raw = vapid.private_key.private_numbers().private_value.to_bytes(32, "big")
    expected = vapid.public_key.public_numbers()

    for text in (vapid.private_pem().decode(), _b64url(raw)):
        assert load_vapid_key(text).public_key.public_numbers() == expected
