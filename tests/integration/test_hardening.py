"""Response hardening: security headers, CORS allow-list, docs switch, no stack traces."""

from __future__ import annotations

from pathlib import Path

import httpx

from skybook.app import create_app
from skybook.bootstrap import bootstrap
from skybook.settings import Settings
from tests.conftest import Database


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


async def test_a_request_that_finds_no_free_database_connection_answers_503_busy(
    postgres_database: Database, tmp_path: Path
) -> None:
    # A fixed pool of one connection, taken by someone else for longer than the pool timeout.
    container = bootstrap(
        Settings(
            _env_file=None,  # type: ignore[call-arg]
            environment="test",
            secret_key="hardening-test-secret-0123456789",  # pragma: allowlist secret - a test-only key
            data_dir=tmp_path,
            database_url=postgres_database.url,
            database_pool_size=1,
            database_pool_timeout_seconds=0.3,
            run_workers=False,
        )
    )
    app = create_app(container)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
            async with container.engine.connect():
                busy = await c.get("/ready")
            assert busy.status_code == 503
            assert busy.headers["content-type"] == "application/problem+json"
            assert busy.json()["code"] == "busy"
            assert busy.headers["retry-after"] == "1"
            # The connection is back: the same request succeeds.
            assert (await c.get("/ready")).status_code == 200
    finally:
        await container.engine.dispose()


async def test_an_unreachable_database_answers_503_database_unavailable_not_500(tmp_path: Path) -> None:
    # Nothing listens on port 1: every connection attempt is refused, as when PostgreSQL is down.
    base = {
        "environment": "test",
        "secret_key": "hardening-test-secret-0123456789",  # pragma: allowlist secret - a test-only key
        "data_dir": tmp_path,
        "database_url": "postgresql+asyncpg://skybook@127.0.0.1:1/skybook",
        "run_workers": False,
    }
    app = create_app(bootstrap(Settings(_env_file=None, **base)))  # type: ignore[arg-type, call-arg]
    # As a server does: an error raised outside the routes is answered, then logged (not re-raised here).
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        answers = [
            await c.get("/ready"),
            await c.get("/v1/airports", headers={"Authorization": "Bearer sbk_not_checked_before_the_db"}),
            # The idempotency middleware reads the database before any route runs.
            await c.post("/v1/holds", json={}, headers={"Idempotency-Key": "k-1", "Authorization": "Bearer x"}),
        ]
    for r in answers:
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "database_unavailable"
        assert r.headers["retry-after"] == "2"
        assert "Traceback" not in r.text
