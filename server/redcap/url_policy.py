"""Where a REDCap token may be sent: the production policy against server-side request forgery.

A coordinator types a connection's API URL; the server then POSTs the project's token there.
Left open, that lets anyone who can edit a connection make the server call into its own
network (a database's HTTP port, an admin console, the cloud metadata service that hands out
the machine's credentials). In production a URL must be https and its host must resolve only
to public addresses, unless the host name, or the address it is or resolves to, is listed in
REDCAP_ALLOWED_HOSTS (a REDCap server inside the hospital network). Outside production
everything is allowed: the tests' stand-in and a developer's REDCap listen on http://127.0.0.1.

The check runs when a URL is saved (a clear 422 for the coordinator) and again on every
socket a call opens (server.redcap.transport), against the very addresses it connects to: a
name that resolves somewhere else by then (DNS rebinding) is refused there.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from urllib.parse import urlsplit

import structlog

from server.core.config import Settings
from server.redcap.errors import RedcapUrlRefused

log = structlog.get_logger(__name__)

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

# Instance-metadata services (AWS, ECS, AWS over IPv6, Alibaba, Azure, Oracle): named even
# where they would be caught anyway, so the answer says what the address is. Azure's is a
# public address, caught only here.
_METADATA = frozenset(
    ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "fd00:ec2::254",
        "100.100.100.200",
        "168.63.129.16",
        "192.0.0.192",
    )
)
_UNIQUE_LOCAL = ip_network("fc00::/7")
# IPv6 addresses that stand for an IPv4 one: judged by the IPv4 address they carry.
_NAT64 = ip_network("64:ff9b::/96")


def _carried_ipv4(address: Address) -> IPv4Address | None:
    if isinstance(address, IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_kind(address: Address) -> str | None:
    """What makes an address no place for a token ("a loopback address"), or None if public."""
    address = _carried_ipv4(address) or address
    if address in _METADATA:
        return "a cloud metadata address"
    # Most specific first: a loopback or link-local address is also "private" to ipaddress.
    checks: list[tuple[bool, str]] = [
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_multicast, "a multicast address"),
        (address in _UNIQUE_LOCAL, "a unique-local address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        # Shared (carrier-grade NAT), documentation, benchmarking ranges and the like.
        (not address.is_global, "a non-public address"),
    ]
    return next((kind for matched, kind in checks if matched), None)


def _literal(host: str) -> Address | None:
    try:
        return ip_address(host)
    except ValueError:
        return None


def normal_host(host: str) -> str:
    """A host as the allow-list holds it: lower case, no brackets, no final dot."""
    return host.strip("[]").rstrip(".").lower()


@dataclass(frozen=True)
class UrlPolicy:
    strict: bool
    names: frozenset[str]
    networks: tuple[Network, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlPolicy:
        names: set[str] = set()
        networks: list[Network] = []
        for entry in settings.REDCAP_ALLOWED_HOSTS:  # checked and normalised by Settings
            try:
                networks.append(ip_network(entry, strict=False))
            except ValueError:
                names.add(entry)
        return cls(
            strict=settings.ENVIRONMENT == "production",
            names=frozenset(names),
            networks=tuple(networks),
        )

    def _address_listed(self, address: Address) -> bool:
        carried = _carried_ipv4(address)
        return any(a in n for n in self.networks for a in (address, carried) if a is not None)

    def host_listed(self, host: str) -> bool:
        """Listed by name, or an address literal inside a listed network."""
        host = normal_host(host)
        literal = _literal(host)
        return host in self.names or (literal is not None and self._address_listed(literal))

    def check_url(self, url: str) -> str:
        """The URL's host, once its scheme passes (no DNS here): in production https only,
        unless the host is listed; the token travels in the body of every call."""
        host = normal_host(urlsplit(url).hostname or "")
        if not host:
            raise RedcapUrlRefused("The REDCap API URL has no host.", host="")
        if self.strict and urlsplit(url).scheme != "https" and not self.host_listed(host):
            raise RedcapUrlRefused(
                f"REDCap must be reached over https: {host} is not listed in "
                "REDCAP_ALLOWED_HOSTS, the hosts allowed plain http.",
                host=host,
            )
        return host

    def check_addresses(self, host: str, addresses: list[str]) -> None:
        """Refuse the host if any address it resolved to is not public and not listed: with
        a choice, a rebinding DNS server would hand out the internal one."""
        host = normal_host(host)
        if not self.strict or host in self.names:
            return
        verb = "is" if _literal(host) is not None else "resolves to"
        for text in addresses:
            address = ip_address(text)
            kind = address_kind(address)
            if kind is not None and not self._address_listed(address):
                # The address goes to the log, for whoever maintains the allow-list; the
                # coordinator's answer names only the kind.
                log.warning("redcap_address_refused", host=host, address=str(address), kind=kind)
                raise RedcapUrlRefused(
                    f"The REDCap API URL's host {host} {verb} {kind}: in production a token "
                    "is sent only to public addresses, unless REDCAP_ALLOWED_HOSTS lists the "
                    "host or its address.",
                    host=host,
                )

    def resolve(self, host: str, port: int) -> list[str]:
        """The addresses to connect to: the host resolved once and every address checked.
        Raises socket.gaierror when the name does not resolve."""
        infos = socket.getaddrinfo(normal_host(host), port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        self.check_addresses(host, addresses)
        return addresses


async def check_api_url(settings: Settings, url: str) -> None:
    """Whether a URL may be saved on a connection; RedcapUrlRefused says why not."""
    policy = UrlPolicy.from_settings(settings)
    host = policy.check_url(url)
    if not policy.strict or host in policy.names:
        return  # nothing to resolve: no DNS lookups outside production
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        await asyncio.to_thread(policy.resolve, host, port)
    except socket.gaierror:
        raise RedcapUrlRefused(
            f"The REDCap API URL's host {host} could not be resolved: in production it is "
            "checked before it is saved.",
            host=host,
        ) from None
