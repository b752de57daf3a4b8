"""Webhook sender benchmark: signed deliveries per second to a receiver on 127.0.0.1.

Creates a tenant, one endpoint and N pending deliveries in a fresh database (SQLite file by
default, or ``--database-url`` for PostgreSQL), then runs the sender's rounds until every delivery
succeeded and prints one JSON document::

    .venv/bin/python bench/webhooks.py --deliveries 2000
    .venv/bin/python bench/webhooks.py --database-url postgresql+asyncpg://root@127.0.0.1:5432/skybook_bench_wh

The receiver is a minimal asyncio HTTP server in the same process (it answers 200 and closes).
Bounded: at most ``deliveries / batch + 100`` rounds; only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from skybook.bootstrap import bootstrap
from skybook.identity.tables import tenants
from skybook.notifications.webhooks import send_due
from skybook.notifications.webhooks.crypto import encrypt_secret, new_endpoint_secret
from skybook.notifications.webhooks.tables import webhook_deliveries, webhook_endpoints
from skybook.platform.events import uuid7
from skybook.platform.migrate import upgrade
from skybook.settings import Settings


async def main(args: argparse.Namespace) -> dict[str, object]:
    received = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        received += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    tmp, url = args.tmp, args.url
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=url,
        data_dir=tmp,
        allow_loopback_webhooks=True,
        run_workers=False,
    )
    container = bootstrap(settings)
    now = datetime.now(UTC)
    tenant, endpoint = uuid.uuid4(), uuid7()
    async with container.engine.begin() as conn:
        await conn.execute(webhook_deliveries.delete())
        await conn.execute(webhook_endpoints.delete())
        await conn.execute(
            tenants.insert().values(id=tenant, name="Bench", kind="agency", plan_code="standard", created_at=now)
        )
        await conn.execute(
            webhook_endpoints.insert().values(
                id=endpoint,
                tenant_id=tenant,
                url=f"http://127.0.0.1:{port}/hook",
                event_types=["order.ticketed"],
                secret_ciphertext=encrypt_secret(new_endpoint_secret(), secret_key=settings.secret_key),
                created_at=now,
                updated_at=now,
            )
        )
        payload = {"type": "order.ticketed", "data": {"record_locator": "ABC234", "passengers": [{"n": 1}] * 2}}
        await conn.execute(
            webhook_deliveries.insert(),
            [
                {
                    "id": uuid7(),
                    "endpoint_id": endpoint,
                    "tenant_id": tenant,
                    "event_id": uuid7(),
                    "event_type": "order.ticketed",
                    "payload": payload,
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for _ in range(args.deliveries)
            ],
        )
    started = time.perf_counter()
    for _ in range(args.deliveries // args.batch + 100):
        if not await send_due(container, limit=args.batch):
            break
    elapsed = time.perf_counter() - started
    async with container.engine.connect() as conn:
        ok = await conn.scalar(
            sa.select(sa.func.count()).select_from(webhook_deliveries).where(webhook_deliveries.c.status == "succeeded")
        )
    await container.engine.dispose()
    server.close()
    return {
        "backend": "postgresql" if url.startswith("postgresql") else "sqlite",
        "deliveries": args.deliveries,
        "succeeded": ok,
        "received": received,
        "batch": args.batch,
        "seconds": round(elapsed, 3),
        "deliveries_per_second": round(args.deliveries / elapsed, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--database-url", default=None)
    arguments = parser.parse_args()
    arguments.tmp = Path(tempfile.mkdtemp(prefix="skybook-bench-webhooks-"))
    arguments.url = arguments.database_url or f"sqlite+aiosqlite:///{arguments.tmp / 'bench.db'}"
    upgrade(arguments.url)  # Alembic runs its own event loop: before ours starts
    print(json.dumps(asyncio.run(main(arguments))))
