"""CPU per hold of the API, in process: the steady figure on a shared machine.

Wall-clock throughput on a machine that other people's jobs share moves with their load; the
CPU time the API process spends per hold moves much less. This script builds the app in its own
process (no uvicorn, no HTTP parsing, no load-generator process), sends ``POST /v1/holds`` straight
to the ASGI app from ``--concurrency`` tasks, and divides the process's CPU time by the holds
answered 201. PostgreSQL's own CPU is not counted (see ``booking.py`` for that).

It alternates rounds *with* authentication and rate limiting (the real app) and *without* them
(the same app, with the principal dependency answering a pre-loaded principal per caller and the
rate limit dependency doing nothing), so the issue-3 comparison comes from one run on one
database, not from two commits.

Runs against a database prepared by ``booking.py`` (agents, raised limits), e.g.::

    PYTHONPATH=src .venv/bin/python bench/hold_cpu.py \\
        --database-url postgresql+asyncpg://root@127.0.0.1:5432/skybook_bench --requests 3000 --rounds 3

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import Request

ROOT = Path(__file__).resolve().parents[1]
BENCH_AGENT_LIKE = "bench-agent-%"


async def _asgi_post(app: Any, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [*headers, (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # pragma: no cover - the app never waits for a disconnect here
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    import asyncpg
    import sqlalchemy as sa

    from skybook.app import create_app
    from skybook.bootstrap import bootstrap
    from skybook.identity import handlers as identity_handlers
    from skybook.platform.heap import settle_heap
    from unauthenticated_app import Unlimited  # this directory: the HTTP comparison's limiter

    dsn = args.database_url.replace("postgresql+asyncpg://", "postgresql://")
    pg = await asyncpg.connect(dsn)
    try:
        agents = await pg.fetch(
            "SELECT id, session_version FROM users WHERE email LIKE $1 ORDER BY email LIMIT $2",
            BENCH_AGENT_LIKE,
            args.clients,
        )
        targets = [
            (str(r["flight_id"]), r["code"]) for r in await pg.fetch("SELECT flight_id, code FROM bench_targets")
        ]
    finally:
        await pg.close()
    if not agents or not targets:
        raise SystemExit("run bench/booking.py on this database first (it adds the agents and bench_targets)")

    container = bootstrap()
    app = create_app(container)
    settle_heap()  # as the server's lifespan does
    now = container.clock.now()
    tokens = [
        container.tokens.issue(subject=a["id"], kind="user", session_version=a["session_version"], now=now)[0]
        for a in agents
    ]
    async with container.engine.connect() as conn:
        principals = {
            f"Bearer {t}".encode(): (await identity_handlers.load_principal(conn, a["id"], "user")).principal  # type: ignore[union-attr]
            for t, a in zip(tokens, agents, strict=True)
        }
        await conn.execute(sa.text("SELECT 1"))

    rng = random.Random(7)
    bodies = [
        json.dumps({"segments": [{"flight_id": f, "booking_class": c}], "passengers": {"adults": 1}}).encode()
        for f, c in rng.sample(targets, min(len(targets), 4000))
    ]
    headers = [[(b"content-type", b"application/json"), (b"authorization", f"Bearer {t}".encode())] for t in tokens]

    async def unauthenticated(request: Request) -> Any:
        # The caller's principal, with no token check and no database read: the "without" variant.
        return principals[request.headers["authorization"].encode()]

    real_limiter = container.limiter

    # Where a request with authentication spends its wall time in the authenticator (waiting for a
    # principal reload shows here, not in CPU), and how many SQL statements a hold costs in all.
    auth_wall: list[float] = []
    authenticate = container.authenticator.authenticate

    async def timed_authenticate(request: Request) -> Any:
        t0 = time.perf_counter()
        try:
            return await authenticate(request)
        finally:
            auth_wall.append(time.perf_counter() - t0)

    container.authenticator.authenticate = timed_authenticate  # type: ignore[method-assign]
    statements = [0]

    def count_statement(*_: Any) -> None:
        statements[0] += 1

    sa.event.listen(container.engine.sync_engine, "before_cursor_execute", count_statement)

    # The variants swap the adapters behind the dependencies, never the dependencies themselves:
    # FastAPI's dependency_overrides rebuilds the overriding dependant on every request, which made
    # the "without" variant slower than the real app and hid the cost being measured.
    def set_auth(on: bool) -> None:
        container.authenticator.authenticate = timed_authenticate if on else unauthenticated  # type: ignore[method-assign]
        container.limiter = real_limiter if on else Unlimited(real_limiter)  # type: ignore[assignment]

    async def round_(n: int) -> dict[str, Any]:
        done = 0
        errors: dict[int, int] = {}
        counter = iter(range(n))

        async def worker(who: int) -> None:
            nonlocal done
            for i in counter:
                status = await _asgi_post(app, "/v1/holds", headers[who % len(headers)], bodies[i % len(bodies)])
                if status == 201:
                    done += 1
                else:
                    errors[status] = errors.get(status, 0) + 1

        auth_wall.clear()
        statements[0] = 0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(args.concurrency)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        waits = sorted(auth_wall)
        return {
            "holds": done,
            "errors": errors,
            "cpu_ms_per_hold": round(cpu * 1000 / max(done, 1), 3),
            "wall_holds_per_s": round(done / wall, 1),
            # CPU share the process got: below ~1 with spare machine capacity means it waited.
            "process_cores": round(cpu / wall, 2),
            "sql_statements_per_hold": round(statements[0] / max(done, 1), 3),
            "auth_wall_ms_mean": round(1000 * sum(waits) / len(waits), 3) if waits else None,
            "auth_wall_ms_p99": round(1000 * waits[int(0.99 * (len(waits) - 1))], 3) if waits else None,
            # Requests that spent over 5 ms in the authenticator: they waited for the database.
            "auth_waited_over_5ms": sum(1 for w in waits if w > 0.005),
            "loadavg_1m": os.getloadavg()[0],
        }

    variants = set(args.variants.split(","))
    results: dict[str, list[dict[str, Any]]] = {"with_auth": [], "without_auth": []}
    lifespan: Callable[[Any], Any] = app.router.lifespan_context
    async with lifespan(app):
        for variant, on in (("with_auth", True), ("without_auth", False)):
            if variant in variants:
                set_auth(on)
                await round_(args.warmup)  # caches, statement compilation, pool
        if args.profile:
            import cProfile

            set_auth(True)
            with cProfile.Profile() as prof:
                await round_(args.requests)
            prof.dump_stats(args.profile)
        for _ in range(args.rounds):
            for variant, on in (("with_auth", True), ("without_auth", False)):
                if variant in variants:
                    set_auth(on)
                    results[variant].append(await round_(args.requests))

    def median(variant: str, field: str = "cpu_ms_per_hold") -> float:
        rounds = results[variant]
        return statistics.median(r[field] for r in rounds) if rounds else float("nan")

    with_auth, without = median("with_auth"), median("without_auth")
    wall_with, wall_without = median("with_auth", "wall_holds_per_s"), median("without_auth", "wall_holds_per_s")
    cache = getattr(container.authenticator, "principals", None)
    return {
        "benchmark": "hold_cpu",
        "settings": {
            "requests_per_round": args.requests,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "clients": len(agents),
            "run_workers": os.environ.get("SKYBOOK_RUN_WORKERS"),
        },
        "rounds": results,
        "cpu_ms_per_hold_with_auth": with_auth,
        "cpu_ms_per_hold_without_auth": without,
        # What the same CPU would give in throughput: holds/s scale with 1 / CPU per hold.
        "auth_throughput_loss_pct": round((1 - without / with_auth) * 100, 1),
        # Measured holds/s in this process (medians): noisy on a shared machine, see loadavg_1m.
        "wall_holds_per_s_with_auth": wall_with,
        "wall_holds_per_s_without_auth": wall_without,
        "wall_throughput_loss_pct": round((1 - wall_with / wall_without) * 100, 1),
        # Change-signal checks and batch reloads of the principal cache over the whole run.
        "principal_cache": {"version_checks": cache.checks, "batch_reloads": cache.reloads} if cache else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database-url", default="postgresql+asyncpg://root@127.0.0.1:5432/skybook_bench")
    ap.add_argument("--requests", type=int, default=3000, help="Holds per measured round.")
    ap.add_argument("--rounds", type=int, default=3, help="Measured rounds per variant (alternating).")
    ap.add_argument("--warmup", type=int, default=500, help="Unmeasured holds per variant before the rounds.")
    ap.add_argument("--concurrency", type=int, default=32, help="Concurrent in-process callers.")
    ap.add_argument("--clients", type=int, default=64, help="Distinct principals (bench agents).")
    ap.add_argument("--variants", default="with_auth,without_auth", help="Which variants to run.")
    ap.add_argument("--profile", help="Also write a cProfile of one round with authentication to this file.")
    args = ap.parse_args()
    os.environ["SKYBOOK_DATABASE_URL"] = args.database_url
    os.environ.setdefault("SKYBOOK_RUN_WORKERS", "false")
    os.environ.setdefault("SKYBOOK_DATABASE_POOL_SIZE", "20")
    runner: Callable[[Awaitable[dict[str, Any]]], dict[str, Any]] = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        pass
    result = runner(_main(args))
    import skybook

    # The checkout actually measured (PYTHONPATH may point at another one than this script's).
    src = Path(skybook.__file__).resolve().parents[2]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=src)
    result["git_commit"] = commit.stdout.strip() or str(src)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
