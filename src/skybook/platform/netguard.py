"""Outbound URL guard (SSRF): refuse URLs that resolve to loopback, private or link-local addresses.

Used for every URL a tenant gives us to call (webhook endpoints). The check resolves the host
and inspects every address it resolves to, so a public name pointing at 10.0.0.5 is refused too.

Checking a name and then letting the HTTP client resolve it again is not enough: a hostile DNS
server can answer a public address to the check and 127.0.0.1 to the connection (DNS rebinding).
So :func:`resolve_outbound_url` returns the checked addresses, and the caller connects to one of
them (see :meth:`OutboundTarget.pinned`) instead of to the name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from skybook.platform.errors import InvalidRequest


class UnsafeUrl(InvalidRequest):
    code = "unsafe_url"
    title = "URL not allowed"


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_loopback: bool) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return None if allow_loopback else "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_private:
        return "private"
    if address.is_multicast or address.is_reserved or address.is_unspecified:
        return "reserved"
    return None


@dataclass(frozen=True, slots=True)
class PinnedRequest:
    """How to send a request to one checked address: connect to ``url``, present ``host_header``
    in HTTP and ``sni_hostname`` in TLS (where the certificate is verified against it)."""

    url: str
    host_header: str
    sni_hostname: str


@dataclass(frozen=True, slots=True)
class OutboundTarget:
    """A URL that passed the check, with the host name as resolved and every address it resolved to."""

    url: str
    scheme: str
    host: str  # ASCII (IDNA) form, the name that was resolved
    port: int
    explicit_port: bool
    addresses: tuple[str, ...]  # all checked, in the resolver's order of preference, no duplicates

    def pinned(self, address: str) -> PinnedRequest:
        """The request to ``address`` (one of :attr:`addresses`) that still speaks to :attr:`host`."""
        if address not in self.addresses:
            raise ValueError(f"{address!r} is not a checked address of {self.host!r}")
        parts = urlsplit(self.url)
        ip_host = f"[{address}]" if ":" in address else address
        name = f"[{self.host}]" if ":" in self.host else self.host
        host_header = f"{name}:{self.port}" if self.explicit_port else name
        url = urlunsplit((parts.scheme, f"{ip_host}:{self.port}", parts.path, parts.query, ""))
        return PinnedRequest(url=url, host_header=host_header, sni_hostname=self.host)


def _ascii_host(hostname: str) -> str:
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return hostname.encode("idna").decode("ascii") if not hostname.isascii() else hostname
    return hostname


async def resolve_outbound_url(url: str, *, allow_loopback: bool = False, require_https: bool = True) -> OutboundTarget:
    """Resolve the URL's host once and check every address; raise ``unsafe_url`` if any is refused.

    The answer is what a connection must use: connecting to the name instead would resolve it again.
    """
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError as exc:  # e.g. an unbalanced [ in the host
        raise UnsafeUrl("the URL cannot be parsed") from exc
    schemes = {"https"} if require_https else {"https", "http"}
    if parts.scheme not in schemes:
        raise UnsafeUrl(f"the URL must use {' or '.join(sorted(schemes))}")
    if not hostname or parts.username or parts.password:
        raise UnsafeUrl("the URL needs a host and must not carry credentials")
    try:
        explicit = parts.port
    except ValueError as exc:
        raise UnsafeUrl("the URL has an invalid port") from exc
    default_port = 443 if parts.scheme == "https" else 80
    port = explicit or default_port
    try:
        host = _ascii_host(hostname)
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode (label too long...)
        raise UnsafeUrl(f"the host {hostname!r} does not resolve") from exc
    addresses: list[str] = []
    for info in infos:
        raw = str(info[4][0])
        address = ipaddress.ip_address(raw.split("%", 1)[0])  # an IPv6 scope ("fe80::1%eth0") is no exemption
        reason = _forbidden(address, allow_loopback=allow_loopback)
        if reason is not None:
            raise UnsafeUrl(f"the host {hostname!r} resolves to a {reason} address")
        if str(address) not in addresses:
            addresses.append(str(address))
    if not addresses:
        raise UnsafeUrl(f"the host {hostname!r} does not resolve")
    return OutboundTarget(
        url=url,
        scheme=parts.scheme,
        host=host,
        port=port,
        explicit_port=port != default_port,
        addresses=tuple(addresses),
    )


async def check_outbound_url(url: str, *, allow_loopback: bool = False, require_https: bool = True) -> str:
    """Return the URL when it is safe to call; raise ``unsafe_url`` otherwise (registration time)."""
    await resolve_outbound_url(url, allow_loopback=allow_loopback, require_https=require_https)
    return url
