"""Retention benchmark: how fast the workers' round deletes old events, and what a round costs
when there is nothing to delete, on PostgreSQL.

Resets a bench database, fills the outbox with ``--old`` events delivered ten days ago followed by
``--recent`` events delivered now, and the inbox with one entry per event and consumer, then
times rounds of ``platform.retention.prune`` (the default retentions: 168 h outbox, 192 h inbox):

* ``first_round``: deletes the old events and their inbox entries (the inbox's old entries are
  handled ten days ago, so they go in the same round);
* ``idle_round``: the next round, with only recent rows left: it should read one batch of the
  outbox and one index probe of the inbox, whatever the table sizes.

``--index-cost`` measures instead what the inbox's ``handled_at`` index costs a consumer: pgbench
(8 clients, 10 s) on the inbox claim of 10 events, without and with the index, twice, interleaved.

    .venv/bin/python bench/retention.py --old 200000 --recent 200000
    .venv/bin/python bench/retention.py --index-cost

Prints one JSON document. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from skybook.platform.clock import SystemClock
from skybook.platform.retention import EMBEDDED_MARKERS, Retention, prune
from skybook.platform.uow import UnitOfWork

sys.path.insert(0, str(Path(__file__).resolve().parent))
import booking as bb  # the booking bench's database reset (refuses names without "bench")

CONSUMERS = ("ticketing", "mail", "webhooks")

_FILL_OUTBOX = sa.text(
    "INSERT INTO outbox (event_id, type, version, context, occurred_at, aggregate_id, data, dispatched_at) "
    "SELECT gen_random_uuid(), 'bench.tick', 1, 'bench', :at, 'agg-' || (i % 64), '{}'::jsonb, :at "
    "FROM generate_series(1, :n) AS i"
)
_FILL_INBOX = sa.text(
    "INSERT INTO inbox (consumer, event_id, handled_at) SELECT c, o.event_id, o.dispatched_at "
    "FROM outbox o CROSS JOIN unnest(CAST(:consumers AS text[])) AS c"
)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy.ext.asyncio import create_async_engine

    from skybook.platform.migrate import upgrade

    await bb.reset_database(args.database_url, args.admin_database, force=False)
    await asyncio.to_thread(upgrade, args.database_url)
    engine = create_async_engine(args.database_url, pool_size=2)
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    async with engine.begin() as conn:
        await conn.execute(_FILL_OUTBOX, {"at": now - timedelta(days=10), "n": args.old})
        await conn.execute(_FILL_OUTBOX, {"at": now, "n": args.recent})
        await conn.execute(_FILL_INBOX, {"consumers": list(CONSUMERS)})
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(sa.text("VACUUM ANALYZE outbox"))
        await conn.execute(sa.text("VACUUM ANALYZE inbox"))
    filled_s = time.perf_counter() - t0
    retention = Retention.of(168, 192, EMBEDDED_MARKERS)

    def uow() -> UnitOfWork:
        return UnitOfWork(engine)

    rounds: dict[str, Any] = {}
    for label in ("first_round", "idle_round"):
        started = time.perf_counter()
        pruned = await prune(uow, retention, SystemClock().now())
        seconds = time.perf_counter() - started
        rounds[label] = {
            "seconds": round(seconds, 3),
            "outbox_deleted": pruned.outbox,
            "inbox_deleted": pruned.inbox,
            "rows_per_second": round((pruned.outbox + pruned.inbox) / seconds) if pruned.outbox else None,
        }
    async with engine.connect() as conn:
        left = {
            "outbox": await conn.scalar(sa.text("SELECT count(*) FROM outbox")),
            "inbox": await conn.scalar(sa.text("SELECT count(*) FROM inbox")),
        }
    await engine.dispose()
    return {
        "old_events": args.old,
        "recent_events": args.recent,
        "consumers": len(CONSUMERS),
        "fill_seconds": round(filled_s, 1),
        **rounds,
        "left": left,
    }


# What a consumer's inbox claim sends for a batch of 10 events (platform.outbox._CLAIM_MANY_PG).
_CLAIM = (
    "INSERT INTO inbox (consumer, event_id, handled_at) SELECT 'ticketing', gen_random_uuid(), now() "
    "FROM generate_series(1, 10) ON CONFLICT DO NOTHING;\n"
)


async def index_cost(args: argparse.Namespace) -> dict[str, Any]:
    """pgbench on the inbox claim, without and with ``ix_inbox_handled_at``, interleaved."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from skybook.platform.migrate import upgrade

    pgbench = shutil.which("pgbench") or "/usr/lib/postgresql/15/bin/pgbench"
    await bb.reset_database(args.database_url, args.admin_database, force=False)
    await asyncio.to_thread(upgrade, args.database_url)
    engine = create_async_engine(args.database_url, isolation_level="AUTOCOMMIT")
    url = sa.engine.make_url(args.database_url)
    runs: list[dict[str, Any]] = []
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(_CLAIM)
        script.flush()
        for round_ in (1, 2):
            for indexed in (False, True):
                async with engine.connect() as conn:
                    await conn.execute(sa.text("TRUNCATE inbox"))
                    await conn.execute(sa.text("DROP INDEX IF EXISTS ix_inbox_handled_at"))
                    if indexed:
                        await conn.execute(sa.text("CREATE INDEX ix_inbox_handled_at ON inbox (handled_at)"))
                argv = [pgbench, "-n", "-h", url.host or "127.0.0.1", "-U", url.username or "root", "-c", "8"]
                argv += ["-j", "2", "-T", str(args.seconds), "-f", script.name, url.database or ""]
                done = await asyncio.to_thread(
                    subprocess.run, argv, capture_output=True, text=True, timeout=args.seconds + 60, check=True
                )
                out = done.stdout
                tps = re.search(r"^tps = ([\d.]+)", out, re.MULTILINE)
                runs.append({"round": round_, "handled_at_index": indexed, "tps": float(tps.group(1)) if tps else None})
    await engine.dispose()
    return {"statement": _CLAIM.strip(), "clients": 8, "seconds": args.seconds, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="postgresql+asyncpg://root@127.0.0.1:5432/skybook_bench_retention")
    parser.add_argument("--admin-database", default="postgres", help="Database to connect to for DROP/CREATE.")
    parser.add_argument("--old", type=int, default=200_000, help="Events delivered ten days ago.")
    parser.add_argument("--recent", type=int, default=200_000, help="Events delivered now.")
    parser.add_argument("--index-cost", action="store_true", help="pgbench the inbox claim without and with the index.")
    parser.add_argument("--seconds", type=int, default=10, help="Seconds of each pgbench run (--index-cost).")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(index_cost(args) if args.index_cost else bench(args)), indent=2))


if __name__ == "__main__":
    main()
