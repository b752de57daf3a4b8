"""CPU per hold of the hold handler alone, in process: no HTTP, no FastAPI, no authentication.

Calls ``booking.handlers.hold_seats`` (one adult, one segment, the bench agents as principals)
from ``--concurrency`` tasks against a database prepared by ``booking.py`` and divides the
process's CPU time by the holds made: the share of a hold that is the handler and its database
access path (SQLAlchemy, or asyncpg directly in the raw unit of work). PostgreSQL's own CPU is
not counted. Prints one JSON document::

    PYTHONPATH=src .venv/bin/python bench/hold_handler_cpu.py --requests 3000 --rounds 3

Every hold it makes stays held (15 minutes) and counts against its agent's unpaid seats: rerun
``booking.py`` (which resets the database) before comparing figures across many runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from typing import Any


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    import asyncpg

    from skybook.booking import handlers
    from skybook.booking.commands import HoldSeats, SegmentChoice
    from skybook.booking.model import PartySize
    from skybook.bootstrap import bootstrap
    from skybook.identity import handlers as identity_handlers

    dsn = args.database_url.replace("postgresql+asyncpg://", "postgresql://")
    pg = await asyncpg.connect(dsn)
    try:
        agents = await pg.fetch("SELECT id FROM users WHERE email LIKE 'bench-agent-%' ORDER BY email LIMIT 32")
        targets = [(r["flight_id"], r["code"]) for r in await pg.fetch("SELECT flight_id, code FROM bench_targets")]
    finally:
        await pg.close()
    if not agents or not targets:
        raise SystemExit("run bench/booking.py on this database first (it adds the agents and bench_targets)")
    container = bootstrap()
    async with container.engine.connect() as conn:
        principals = [(await identity_handlers.load_principal(conn, a["id"], "user")).principal for a in agents]  # type: ignore[union-attr]
    rng = random.Random(1)

    async def round_(n: int) -> dict[str, Any]:
        work = iter(range(n))

        async def caller(k: int) -> None:
            for _ in work:
                flight_id, code = targets[rng.randrange(len(targets))]
                cmd = HoldSeats((SegmentChoice(flight_id, code),), PartySize(1), principals[k % len(principals)])
                await handlers.hold_seats(cmd, container)

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(caller(k) for k in range(args.concurrency)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        return {"holds": n, "cpu_ms_per_hold": round(cpu * 1000 / n, 3), "holds_per_s": round(n / wall, 1)}

    try:
        await round_(args.warmup)
        rounds = [await round_(args.requests) for _ in range(args.rounds)]
    finally:
        await container.close()
    return {
        "benchmark": "hold_handler_cpu",
        "settings": {"requests": args.requests, "rounds": args.rounds, "concurrency": args.concurrency},
        "rounds": rounds,
        "cpu_ms_per_hold_median": statistics.median(r["cpu_ms_per_hold"] for r in rounds),
        "loadavg_1m": os.getloadavg()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database-url", default="postgresql+asyncpg://root@127.0.0.1:5432/skybook_bench")
    ap.add_argument("--requests", type=int, default=3000, help="Holds per measured round.")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    if "127.0.0.1" not in args.database_url and "localhost" not in args.database_url:
        raise SystemExit("the benchmark only talks to a database on 127.0.0.1")
    os.environ.setdefault("SKYBOOK_DATABASE_URL", args.database_url)
    os.environ["SKYBOOK_RUN_WORKERS"] = "false"  # no in-process consumers: the handler's CPU only
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    print(json.dumps(runner(_main(args)), indent=2))


if __name__ == "__main__":
    main()
