"""Worker batch benchmark: CPU of one consumer transaction, all through SQLAlchemy or mixed, on PostgreSQL.

A worker handles each batch of events in one unit of work: begin, claim the batch in the inbox,
the consumer's effect, commit. This measures the process CPU and the wall time of that
transaction (``Handling.together`` with the bench consumer of ``bench/events.py``, batches of
``--batch`` events) for:

* ``sqlalchemy``: ``UnitOfWork(engine)``, every statement through SQLAlchemy;
* ``mixed``: ``Container.consumer_uow`` (what ``skybook worker`` uses): transaction, claim and the
  consumer's ``uow.execute`` by asyncpg;
* ``asyncpg``: the same four statements by hand on one asyncpg connection (the floor).

The variants run interleaved, ``--rounds`` times each, so a busy moment of a shared machine
lands on all of them; the JSON gives every round and the median.

    .venv/bin/python bench/consumer_uow.py --batches 3000 --rounds 3

Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skybook.platform.clock import SystemClock
from skybook.platform.db import create_engine
from skybook.platform.events import Event
from skybook.platform.messaging.worker import Handling
from skybook.platform.migrate import upgrade
from skybook.platform.uow import UnitOfWork

sys.path.insert(0, str(Path(__file__).resolve().parent))
import booking as bb  # the booking bench's database reset (refuses names without "bench")
import events as be  # the bench consumer and its effect

_CLAIM = (
    "INSERT INTO inbox (consumer, event_id, handled_at) SELECT $1, unnest($2::uuid[]), $3 "
    "ON CONFLICT DO NOTHING RETURNING event_id"
)
_EFFECT = (
    "INSERT INTO bench_effects (event_id, handled_at) SELECT unnest($1::text[]), extract(epoch from clock_timestamp())"
)


def _batches(n: int, size: int) -> list[list[Event]]:
    return [[Event(type=be.EVENT_TYPE, aggregate_id="a", data={"i": i}) for i in range(size)] for _ in range(n)]


async def _timed(n: int, size: int, one: Callable[[list[Event]], Awaitable[None]]) -> dict[str, float]:
    for batch in _batches(50, size):  # warm: pools, prepared statements, compiled SQL
        await one(batch)
    batches = _batches(n, size)
    cpu, wall = time.process_time(), time.perf_counter()
    for batch in batches:
        await one(batch)
    return {
        "cpu_ms_per_batch": round((time.process_time() - cpu) * 1000 / n, 3),
        "wall_ms_per_batch": round((time.perf_counter() - wall) * 1000 / n, 3),
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    import asyncpg

    await bb.reset_database(args.database_url, args.admin_database, force=False)
    await asyncio.to_thread(upgrade, args.database_url)
    engine = create_engine(args.database_url, pool_size=4)
    async with engine.begin() as conn:
        await conn.execute(be.CREATE_EFFECTS)
    consumer = be.tasks_consumers()[0]
    clock = SystemClock()
    plain = Handling(consumer, lambda: UnitOfWork(engine), clock)
    mixed = Handling(consumer, lambda: UnitOfWork(engine, raw=True, mixed=True), clock)
    raw = await asyncpg.connect(bb.pg_dsn(args.database_url), timeout=10)

    async def by_hand(batch: list[Event]) -> None:
        async with raw.transaction():
            await raw.fetch(_CLAIM, consumer.name, [e.id for e in batch], datetime.now(UTC))
            await raw.execute(_EFFECT, [str(e.id) for e in batch])

    variants: dict[str, Callable[[list[Event]], Awaitable[None]]] = {
        "sqlalchemy": plain.together,
        "mixed": mixed.together,
        "asyncpg": by_hand,
    }
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    try:
        for _ in range(args.rounds):
            for name, one in variants.items():
                rounds[name].append(await _timed(args.batches, args.batch, one))
    finally:
        await raw.close()
        await engine.dispose()
    return {
        "benchmark": "consumer_uow",
        "batch_size": args.batch,
        "batches_per_round": args.batches,
        "median_cpu_ms_per_batch": {k: statistics.median(r["cpu_ms_per_batch"] for r in v) for k, v in rounds.items()},
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="postgresql+asyncpg://root@127.0.0.1:5432/skybook_bench_uow")
    parser.add_argument("--admin-database", default="root")
    parser.add_argument("--batches", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=4, help="Events per batch.")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import uvloop  # as skybook worker runs

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        print(json.dumps(runner.run(bench(args)), indent=2))


if __name__ == "__main__":
    main()
