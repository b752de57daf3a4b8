"""Outbound URL guard (SSRF): refuse URLs that resolve to loopback, private or link-local addresses.

Used for every URL a tenant gives us to call (webhook endpoints). The check resolves the host
and inspects every address it resolves to, so a public name pointing at 10.0.0.5 is refused too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

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


async def check_outbound_url(url: str, *, allow_loopback: bool = False, require_https: bool = True) -> str:
    """Return the URL when it is safe to call; raise ``unsafe_url`` otherwise."""
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
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeUrl("the URL has an invalid port") from exc
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode (label too long...)
        raise UnsafeUrl(f"the host {hostname!r} does not resolve") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        reason = _forbidden(address, allow_loopback=allow_loopback)
        if reason is not None:
            raise UnsafeUrl(f"the host {hostname!r} resolves to a {reason} address")
    return url
