"""Response hardening: security headers, CORS allow-list, docs switch, no stack traces."""

from __future__ import annotations

from pathlib import Path

import httpx

from skybook.app import create_app
from skybook.bootstrap import bootstrap
from skybook.settings import Settings


async def _client(tmp_path: Path, **settings: object) -> httpx.AsyncClient:
    base = {
        "environment": "test",
        "secret_key": "hardening-test-secret-0123456789",  # pragma: allowlist secret - a test-only key
        "data_dir": tmp_path,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}",
        "run_workers": False,
    }
    app = create_app(bootstrap(Settings(_env_file=None, **{**base, **settings})))  # type: ignore[arg-type, call-arg]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def test_every_answer_carries_the_security_headers(tmp_path: Path) -> None:
    async with await _client(tmp_path) as c:
        for r in (await c.get("/health"), await c.get("/v1/airports")):
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["referrer-policy"] == "no-referrer"
            assert "default-src 'none'" in r.headers["content-security-policy"]
        assert "strict-transport-security" not in r.headers  # HSTS only in production


async def test_production_adds_hsts_and_can_switch_the_docs_off(tmp_path: Path) -> None:
    async with await _client(tmp_path, environment="production", docs_enabled=False) as c:
        assert (await c.get("/docs")).status_code == 404
        assert (await c.get("/redoc")).status_code == 404
        r = await c.get("/health")
        assert r.headers["strict-transport-security"].startswith("max-age=")


async def test_cors_answers_only_listed_origins(tmp_path: Path) -> None:
    async with await _client(tmp_path, cors_origins="https://app.example.com") as c:
        preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
        ok = await c.options("/v1/holds", headers={"Origin": "https://app.example.com", **preflight})
        assert ok.headers["access-control-allow-origin"] == "https://app.example.com"
        evil = await c.options("/v1/holds", headers={"Origin": "https://evil.example.net", **preflight})
        assert "access-control-allow-origin" not in evil.headers


async def test_an_unauthenticated_call_is_a_problem_document_with_a_challenge(tmp_path: Path) -> None:
    async with await _client(tmp_path) as c:
        r = await c.get("/v1/orders")
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["code"] == "unauthenticated"
        assert "Traceback" not in r.text
