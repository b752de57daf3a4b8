"""Outbound URLs (tenant webhooks) never reach loopback, private or link-local addresses."""

from __future__ import annotations

import pytest

from skybook.platform.netguard import UnsafeUrl, check_outbound_url


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
