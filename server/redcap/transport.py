"""The HTTP session every REDCap call goes through (CheckedProject: PyCap's Project on it):
checked addresses only, no redirects, no proxy.

Checking a URL's host when it is saved is not enough: DNS may answer otherwise a minute later
(DNS rebinding), and a plain requests session resolves the name again when it connects. So
the check lives in the socket's creation: each new connection resolves its host once, puts
every address through the policy (server.redcap.url_policy) and connects to those same
addresses, nothing else. TLS (SNI and the certificate's name) and the Host header still use
the name, as before. A kept-alive connection was checked when it was opened.

Proxies from the environment (HTTPS_PROXY) are not used: a proxy would resolve the name and
connect where no check reaches. A CA bundle from the environment (REQUESTS_CA_BUNDLE) still is.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import requests
from redcap.methods.base import Base
from redcap.project import Project
from redcap.request import _ContentConfig, _RCRequest
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import create_connection

from server.redcap.url_policy import UrlPolicy


def _connect(conn: HTTPConnection, policy: UrlPolicy) -> socket.socket:
    """urllib3's HTTPConnection._new_conn, but to the addresses the policy passed.

    The policy's refusal (RedcapUrlRefused) is no OSError: urllib3 and requests let it through
    untouched, before a byte is sent. Failures are raised as urllib3 raises them, so requests
    reports them as it always does (ConnectionError, ConnectTimeout).
    """
    try:
        addresses = policy.resolve(conn.host, conn.port)
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    error: OSError | None = None
    for address in addresses:
        try:
            # An address literal: getaddrinfo inside only parses it, nothing is looked up.
            return create_connection(
                (address, conn.port),
                conn.timeout,
                source_address=conn.source_address,
                socket_options=conn.socket_options,
            )
        except OSError as exc:
            error = exc
    if isinstance(error, TimeoutError):
        raise ConnectTimeoutError(
            conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
        ) from error
    raise NewConnectionError(conn, f"Failed to establish a new connection: {error}") from error


def _pool_classes(policy: UrlPolicy) -> dict[str, type[HTTPConnectionPool]]:
    """Connection pools whose connections check against `policy`. A class per policy: urllib3
    makes connections from a class and a fixed set of arguments, with no room for ours."""

    class CheckedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return _connect(self, policy)

    class CheckedHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return _connect(self, policy)

    class CheckedHTTPConnectionPool(HTTPConnectionPool):
        ConnectionCls = CheckedHTTPConnection

    class CheckedHTTPSConnectionPool(HTTPSConnectionPool):
        ConnectionCls = CheckedHTTPSConnection

    return {"http": CheckedHTTPConnectionPool, "https": CheckedHTTPSConnectionPool}


class CheckedAdapter(HTTPAdapter):
    """requests' adapter with the checked connection pools, and without proxies."""

    def __init__(self, policy: UrlPolicy) -> None:
        self.policy = policy  # before super().__init__, which builds the pool manager
        super().__init__()

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self.policy)

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert)


@lru_cache(maxsize=8)
def checked_session(policy: UrlPolicy) -> requests.Session:
    """The session for clients under this policy: checked connections, never a redirect
    followed. One per policy (a process has one, but tests change settings), so kept-alive
    connections serve the next client, as PyCap's global session did; urllib3's pools are
    thread-safe."""
    session = requests.Session()
    adapter = CheckedAdapter(policy)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    # Whoever calls it with allow_redirects left on: the first redirect raises, unfollowed.
    session.max_redirects = 0
    return session


# Fail closed: a PyCap whose calls no longer go through _call_api would bypass the override.
if "_call_api" not in vars(Base):
    raise ImportError("PyCap no longer sends its calls through Base._call_api")


class CheckedProject(Project):
    """PyCap's Project, its calls sent through the checked session rather than PyCap's global
    one.

    PyCap offers no way to give it a session: this is its `Base._call_api` (PyCap 2.7) with
    `session=` added. Should a PyCap upgrade rename it, calls would go round the checks: the
    import fails first (the check above), and tests/test_redcap_url_policy.py would.
    """

    def __init__(self, url: str, token: str, *, policy: UrlPolicy, **kwargs: Any) -> None:
        super().__init__(url, token, **kwargs)
        self._session = checked_session(policy)

    def _call_api(self, payload: dict[str, Any], return_type: str, file: Any = None) -> Any:
        config = _ContentConfig(
            return_empty_json=return_type == "empty_json",
            return_bytes=return_type == "file_map",
        )
        request = _RCRequest(url=self.url, payload=payload, config=config, session=self._session)
        return request.execute(
            verify_ssl=self.verify_ssl,
            return_headers=return_type == "file_map",
            file=file,
            **self._request_kwargs,
        )
