"""Outbound URLs (tenant webhooks) never reach loopback, private or link-local addresses."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from skybook.platform.netguard import UnsafeUrl, check_outbound_url, resolve_outbound_url


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names the resolver answers with the given addresses (in order); others resolve for real."""
    answers: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def resolve(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            return [
                (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in answers[host]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    return answers


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://[::1]/hook",
        "https://10.1.2.3/hook",
        "https://172.16.0.9/hook",
        "https://192.168.1.1/hook",
        "https://169.254.169.254/latest/meta-data",  # cloud metadata
        "https://[fe80::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",  # IPv4-mapped loopback
        "https://0.0.0.0/hook",
        "https://localhost/hook",
    ],
)
async def test_internal_addresses_are_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        await check_outbound_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.216.34/hook",
        "ftp://93.184.216.34/",
        "https://user:pw@93.184.216.34/",  # pragma: allowlist secret - credentials in a URL must be refused
        "https:///nohost",
        "https://93.184.216.34:99999/",
    ],
)
async def test_malformed_or_plaintext_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        await check_outbound_url(url)


async def test_a_public_address_over_https_is_allowed() -> None:
    assert await check_outbound_url("https://93.184.216.34/hook") == "https://93.184.216.34/hook"


async def test_loopback_can_be_allowed_for_tests_but_private_ranges_never() -> None:
    assert await check_outbound_url("http://127.0.0.1:9000/hook", allow_loopback=True, require_https=False)
    with pytest.raises(UnsafeUrl):
        await check_outbound_url("https://10.0.0.1/hook", allow_loopback=True)


@pytest.mark.parametrize(
    "url",
    [
        "https://[abc/hook",  # unbalanced bracket: urlsplit raises
        f"https://{'a' * 70}.example.com/hook",  # a label IDNA cannot encode
        "https://exa mple.com/hook",
    ],
)
async def test_unparseable_urls_are_refused_not_crashed_on(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        await check_outbound_url(url)


@pytest.mark.parametrize("internal", ["10.0.0.7", "127.0.0.1", "169.254.169.254", "fd00::1", "::ffff:192.168.0.1"])
async def test_a_name_with_any_internal_address_among_public_ones_is_refused(
    dns: dict[str, list[str]], internal: str
) -> None:
    dns["hooks.example"] = ["93.184.216.34", internal, "2606:2800:220:1::1"]
    with pytest.raises(UnsafeUrl, match="resolves to a"):
        await resolve_outbound_url("https://hooks.example/skybook")


async def test_the_target_keeps_every_checked_address_once_in_the_resolver_order(dns: dict[str, list[str]]) -> None:
    dns["hooks.example"] = ["2606:2800:220:1::1", "93.184.216.34", "93.184.216.34"]
    target = await resolve_outbound_url("https://hooks.example/skybook?x=1")
    assert target.addresses == ("2606:2800:220:1::1", "93.184.216.34")
    assert (target.host, target.port, target.explicit_port) == ("hooks.example", 443, False)


async def test_a_pinned_request_goes_to_the_address_and_keeps_the_name_for_host_and_sni(
    dns: dict[str, list[str]],
) -> None:
    dns["hooks.example"] = ["93.184.216.34", "2606:2800:220:1::1"]
    target = await resolve_outbound_url("https://Hooks.Example/skybook?x=1#frag")
    v4 = target.pinned("93.184.216.34")
    assert v4.url == "https://93.184.216.34:443/skybook?x=1"
    assert (v4.host_header, v4.sni_hostname) == ("hooks.example", "hooks.example")
    v6 = target.pinned("2606:2800:220:1::1")
    assert v6.url == "https://[2606:2800:220:1::1]:443/skybook?x=1"
    assert (v6.host_header, v6.sni_hostname) == ("hooks.example", "hooks.example")


async def test_a_pinned_request_keeps_a_non_default_port_in_the_host_header(dns: dict[str, list[str]]) -> None:
    dns["hooks.example"] = ["93.184.216.34"]
    pinned = (await resolve_outbound_url("https://hooks.example:8443/")).pinned("93.184.216.34")
    assert (pinned.url, pinned.host_header) == ("https://93.184.216.34:8443/", "hooks.example:8443")
    assert (await resolve_outbound_url("https://hooks.example:443/")).pinned("93.184.216.34").host_header == (
        "hooks.example"
    )


async def test_an_internationalised_name_is_resolved_and_sent_in_its_ascii_form(dns: dict[str, list[str]]) -> None:
    dns["xn--bcher-kva.example"] = ["93.184.216.34"]
    target = await resolve_outbound_url("https://bücher.example/hook")
    assert target.host == "xn--bcher-kva.example"
    assert target.pinned("93.184.216.34").sni_hostname == "xn--bcher-kva.example"


async def test_an_address_literal_is_its_own_target() -> None:
    target = await resolve_outbound_url("https://[2606:2800:220:1::1]:8443/hook")
    pinned = target.pinned("2606:2800:220:1::1")
    assert pinned.url == "https://[2606:2800:220:1::1]:8443/hook"
    assert pinned.host_header == "[2606:2800:220:1::1]:8443"


async def test_only_a_checked_address_can_be_pinned(dns: dict[str, list[str]]) -> None:
    dns["hooks.example"] = ["93.184.216.34"]
    target = await resolve_outbound_url("https://hooks.example/")
    with pytest.raises(ValueError, match="not a checked address"):
        target.pinned("127.0.0.1")
