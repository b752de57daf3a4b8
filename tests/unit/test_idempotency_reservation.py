"""An Idempotency-Key's reservation lives as long as its request, and not much longer.

A request still running renews its reservation, so a slow request never loses its key to a retry;
a reservation whose process died (no renewals) frees the key one TTL later, so the client's retry
does not wait for minutes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from skybook.platform import idempotency
from skybook.platform.clock import FakeClock
from skybook.platform.idempotency import RESERVATION_TTL, IdempotencyMiddleware, idempotency_keys


class SlowRoute:
    """An ASGI app that answers 201 only once released."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.released = asyncio.Event()
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        self.started.set()
        await self.released.wait()
        await send({"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"ok": true}'})


async def _post(app: Any, key: str) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/things",
        "headers": [(b"idempotency-key", key.encode()), (b"content-type", b"application/json")],
    }
    sent: list[dict[str, Any]] = []
    body = [{"type": "http.request", "body": b'{"a": 1}', "more_body": False}]

    async def receive() -> dict[str, Any]:
        return body.pop(0) if body else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    e = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}")
    async with e.begin() as conn:
        await conn.run_sync(lambda c: idempotency_keys.create(c))
    yield e
    await e.dispose()


async def _locked_until(engine: AsyncEngine) -> datetime:
    async with engine.connect() as conn:
        value = await conn.scalar(sa.select(idempotency_keys.c.locked_until))
    assert isinstance(value, datetime)
    return value


async def test_a_request_running_past_the_ttl_keeps_its_key(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idempotency, "RENEW_EVERY_S", 0.02)
    clock = FakeClock(datetime(2026, 11, 28, 12, 0, tzinfo=UTC))
    route = SlowRoute()
    app = IdempotencyMiddleware(route, engine_factory=lambda: engine, clock=clock)

    first = asyncio.create_task(_post(app, "k-slow"))
    await route.started.wait()
    clock.advance(RESERVATION_TTL + timedelta(seconds=1))  # the first reservation has run out...
    for _ in range(250):  # ...until the running request renews it (bounded wait)
        if await _locked_until(engine) > clock.now():
            break
        await asyncio.sleep(0.02)
    # A retry meanwhile must not run it again (bounded: a retry that took over would wait on the route).
    status, headers, body = await asyncio.wait_for(_post(app, "k-slow"), 10)
    assert status == 409 and b"idempotency_in_progress" in body
    assert headers[b"retry-after"] == b"1"

    route.released.set()
    assert (await first)[0] == 201
    replay = await _post(app, "k-slow")
    assert replay[0] == 201 and replay[1][b"idempotent-replayed"] == b"true"
    assert route.calls == 1


async def test_a_key_whose_process_died_is_free_one_ttl_later(engine: AsyncEngine) -> None:
    clock = FakeClock(datetime(2026, 11, 28, 12, 0, tzinfo=UTC))
    route = SlowRoute()
    route.released.set()
    app = IdempotencyMiddleware(route, engine_factory=lambda: engine, clock=clock)
    # What a process killed mid-request leaves behind: a reservation nobody renews or answers.
    async with engine.begin() as conn:
        await conn.execute(
            idempotency_keys.insert().values(
                scope="public",
                key="k-dead",
                fingerprint=_fingerprint(),
                created_at=clock.now(),
                locked_until=clock.now() + RESERVATION_TTL,
            )
        )

    assert (await _post(app, "k-dead"))[0] == 409  # still reserved
    clock.advance(RESERVATION_TTL + timedelta(seconds=1))
    status, _, _ = await _post(app, "k-dead")  # taken over: the retry runs
    assert status == 201
    assert route.calls == 1


def _fingerprint() -> str:
    import hashlib

    return hashlib.sha256(b"/v1/things\n" + b'{"a": 1}').hexdigest()
