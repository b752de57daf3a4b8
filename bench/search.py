"""Search-cache benchmark: hit ratio on a skewed (Zipf) search workload and cached searches/s.

One command resets a PostgreSQL bench database, migrates and seeds the demo network, runs the
app *in this process* (uvicorn on a free 127.0.0.1 port, the embedded dispatcher on, the search
cache in Redis under a key prefix unique to the run), drives it over HTTP from a separate
load-generator process, and prints one JSON document::

    .venv/bin/python bench/search.py \\
        --database-url postgresql+asyncpg://root@127.0.0.1:5432/skybook_bench_search \\
        --redis-url redis://127.0.0.1:6379/14 --duration 20

Running the app in-process lets the bench read the cache's own Prometheus counters
(``skybook_cache_requests_total``) before and after each phase, so the hit ratio is the
server's, not a guess from the client.

Phases (each after an unmeasured warm-up):

* ``zipf``      closed loop of searches over the demo network: route-day ranked by a Zipf law,
  party size and cabin from fixed mixes; beside it a trickle of holds (one per ``--look-to-book``
  searches, one at a time, flights drawn from the same Zipf law) makes the dispatcher emit
  ``inventory.changed`` and invalidate the route-days it touches, so the ratio pays for them;
* ``hot``       the 20 most popular queries only, no holds: every leg is a hit (cached searches/s);
* ``uncached``  the zipf workload again with the cache switched off (baseline; pass --phases to skip).

Only 127.0.0.1 is contacted; every loop is bounded in count and in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import sys
import tempfile
import time
import uuid
from bisect import bisect_left
from itertools import accumulate
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

import booking as bb  # noqa: E402 - the booking bench's helpers: database reset, seeding, log-in data

PARTIES = [((1, 0, 0), 0.55), ((2, 0, 0), 0.25), ((2, 1, 0), 0.08), ((2, 2, 0), 0.07), ((1, 0, 1), 0.05)]
CABINS = [("Y", 0.9), ("J", 0.1)]
HOT_QUERIES = 20


# --------------------------------------------------------------------------------------------
# Load generator (separate process)
# --------------------------------------------------------------------------------------------


class Zipf:
    """Ranks 0..n-1 drawn with probability proportional to 1 / (rank + 1) ** s."""

    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        self._cum = list(accumulate(1 / (k + 1) ** s for k in range(n)))
        self._rng = rng

    def draw(self) -> int:
        return min(len(self._cum) - 1, bisect_left(self._cum, self._rng.random() * self._cum[-1]))


def _weighted(items: list[tuple[Any, float]], rng: random.Random) -> Any:
    return rng.choices([i for i, _ in items], weights=[w for _, w in items])[0]


async def _client_main(cfg: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    rng = random.Random(cfg["seed"])
    route_days: list[list[Any]] = cfg["route_days"]  # [origin, destination, day, [flight ids]] by popularity
    zipf = Zipf(len(route_days), cfg["zipf_s"], rng)

    def query(rank: int) -> str:
        o, d, day, _ = route_days[rank]
        (adults, children, infants), cabin = _weighted(PARTIES, rng), _weighted(CABINS, rng)
        return (
            f"/v1/offers?origin={o}&destination={d}&departure_date={day}"
            f"&adults={adults}&children={children}&infants={infants}&cabin={cabin}"
        )

    hot = [query(r) for r in range(HOT_QUERIES)]
    timeout = aiohttp.ClientTimeout(total=cfg["request_timeout_s"])
    connector = aiohttp.TCPConnector(limit=cfg["clients"] + 8, keepalive_timeout=60)
    async with aiohttp.ClientSession(cfg["base_url"], timeout=timeout, connector=connector) as session:
        tokens = []
        for email in cfg["emails"]:
            form = {"grant_type": "password", "username": email, "password": cfg["password"]}
            async with session.post("/v1/auth/token", data=form) as resp:
                if resp.status != 200:
                    raise SystemExit(f"log-in failed: {resp.status} {await resp.text()}")
                tokens.append((await resp.json())["access_token"])
        auth = [{"Authorization": f"Bearer {t}"} for t in tokens]
        print("READY", flush=True)

        results: dict[str, Any] = {}
        for phase in cfg["phases"]:
            # The parent switches the server for the phase, then answers on stdin.
            print(f"PHASE {phase}", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            results[phase] = await _run_phase(session, cfg, phase, auth, zipf, query, hot, rng)
    return results


async def _run_phase(
    session: Any,
    cfg: dict[str, Any],
    phase: str,
    auth: list[dict[str, str]],
    zipf: Zipf,
    query: Any,
    hot: list[str],
    rng: random.Random,
) -> dict[str, Any]:
    import aiohttp
    import orjson

    route_days: list[list[Any]] = cfg["route_days"]
    warmup, duration = cfg["phase_times"][phase]
    loop = asyncio.get_running_loop()
    start = loop.time()
    # The measured window opens after ``warmup_searches`` searches (zipf phase) or ``warmup``
    # seconds, whichever comes first, and lasts ``duration`` seconds; searchers and holds read it.
    window = {"from": float("inf"), "to": start + warmup + duration}
    warmup_searches = cfg["warmup_searches"] if phase == "zipf" else 0
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    holds: dict[str, int] = {}
    marked = asyncio.Event()

    async def searcher(who: int) -> None:
        headers = auth[who % len(auth)]
        for _ in range(10_000_000):  # bounded; the deadline ends it long before
            now = loop.time()
            if now >= window["to"]:
                return
            path = hot[rng.randrange(len(hot))] if phase == "hot" else query(zipf.draw())
            t0 = loop.time()
            searched[0] += 1
            try:
                async with session.get(path, headers=headers) as resp:
                    await resp.read()
                    status = str(resp.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
            t1 = loop.time()
            if t0 >= window["from"] and t1 <= window["to"]:
                latencies.append(t1 - t0)
                statuses[status] = statuses.get(status, 0) + 1

    searched = [0]
    warm: dict[str, Any] = {}

    async def hold_trickle() -> None:
        """One hold per ``look_to_book`` searches, one at a time, beside the searchers."""
        ratio = cfg["look_to_book"]
        if phase == "hot" or ratio <= 0:
            return
        for n in range(1, 10_000_000):
            while searched[0] < n * ratio:
                if loop.time() >= window["to"]:
                    return
                await asyncio.sleep(0.01)
            flights = route_days[zipf.draw()][3]
            body = orjson.dumps(
                {
                    "segments": [{"flight_id": rng.choice(flights), "booking_class": "Y"}],
                    "passengers": {"adults": 1 + rng.randrange(2)},
                }
            )
            try:
                async with session.post(
                    "/v1/holds", data=body, headers={**auth[n % len(auth)], "Content-Type": "application/json"}
                ) as resp:
                    await resp.read()
                    outcome = str(resp.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome = type(exc).__name__
            if loop.time() >= window["from"]:
                holds[outcome] = holds.get(outcome, 0) + 1

    async def mark() -> None:
        for _ in range(int(warmup * 20) + 1):  # polls the search count; bounded by the warm-up seconds
            if loop.time() >= start + warmup or (warmup_searches and searched[0] >= warmup_searches):
                break
            await asyncio.sleep(0.05)
        warm["searches"], warm["seconds"] = searched[0], round(loop.time() - start, 1)
        window["from"], window["to"] = loop.time(), loop.time() + duration
        print("MEASURE_START", flush=True)
        await asyncio.sleep(duration)
        print("MEASURE_END", flush=True)
        marked.set()

    await asyncio.gather(mark(), hold_trickle(), *(searcher(i) for i in range(cfg["clients"])))
    lat = bb.latency_summary(latencies)
    return {
        "searches": len(latencies),
        "searches_per_second": round(len(latencies) / duration, 1),
        "warmup": warm,
        "statuses": statuses,
        "holds_during_measurement": holds,
        **lat,
    }


def steady_state_cold_share(route_days: int, zipf_s: float, searches_per_second: float, ttl: float) -> float:
    """Share of searches that miss because their leg expired, once the cache is in steady state.

    A measured window shorter than the TTL sees no value expire; in a server running for hours each
    leg also misses once per TTL it is asked for. With Poisson arrivals at rate r on a leg, a value
    lives ``ttl`` and serves r * ttl hits, then the next request misses: miss share 1 / (1 + r * ttl).
    Summed over the workload's legs (route-day by the Zipf law, cabin by the mix), weighted by traffic.
    """
    weights = [1 / (k + 1) ** zipf_s for k in range(route_days)]
    total = sum(weights)
    share = 0.0
    for w in weights:
        for _, cabin_share in CABINS:
            p = w / total * cabin_share
            share += p / (1 + p * searches_per_second * ttl)
    return share


def client_entry(config_path: str) -> None:
    cfg = json.loads(Path(config_path).read_text(encoding="utf-8"))
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    result = asyncio.run(_client_main(cfg))
    print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------
# Orchestration: the app runs here, in this process
# --------------------------------------------------------------------------------------------


async def route_days(url: str) -> list[list[Any]]:
    """Every (origin, destination, local date) with bookable flights, in a fixed random popularity order."""
    import asyncpg

    conn = await asyncpg.connect(bb.pg_dsn(url), timeout=10)
    try:
        rows = await conn.fetch(
            """
            SELECT origin, destination, departure_date::text AS day, array_agg(id::text ORDER BY id) AS ids
            FROM flights WHERE status = 'scheduled' AND departure_at > now() + interval '2 hours'
            GROUP BY origin, destination, departure_date ORDER BY origin, destination, departure_date
            """
        )
    finally:
        await conn.close()
    items = [[r["origin"], r["destination"], r["day"], list(r["ids"])] for r in rows]
    random.Random(2026).shuffle(items)
    return items


def cache_counts() -> dict[str, float]:
    from prometheus_client import REGISTRY

    counts = {}
    for result in ("hit", "miss", "coalesced", "error"):
        v = REGISTRY.get_sample_value("skybook_cache_requests_total", {"cache": "search", "result": result})
        counts[result] = v or 0.0
    for reason in ("cold", "stale"):
        v = REGISTRY.get_sample_value("skybook_cache_misses_total", {"cache": "search", "reason": reason})
        counts[f"miss_{reason}"] = v or 0.0
    counts["refreshed"] = REGISTRY.get_sample_value("skybook_cache_refreshes_total", {"cache": "search"}) or 0.0
    for result in ("hit", "miss"):
        v = REGISTRY.get_sample_value("skybook_cache_seconds_sum", {"cache": "search", "result": result})
        counts[f"{result}_seconds"] = v or 0.0
    counts["invalidated_tags"] = (
        REGISTRY.get_sample_value("skybook_cache_invalidations_total", {"cache": "search"}) or 0.0
    )
    return counts


async def drop_prefix(redis_url: str, prefix: str) -> int:
    import redis.asyncio as redis

    r = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)
    try:
        keys = [k async for k in r.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 1000):
            await r.delete(*keys[i : i + 1000])
        return len(keys)
    finally:
        await r.aclose()


async def serve_and_drive(args: argparse.Namespace, cfg: dict[str, Any], workdir: Path) -> dict[str, Any]:
    import uvicorn

    from skybook.app import create_app
    from skybook.bootstrap import bootstrap

    container = bootstrap()
    ttl = container.cache.ttl_seconds
    app = create_app(container)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=cfg["port"], log_level="warning", access_log=False, lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.05)
    else:
        raise SystemExit("server did not start")

    path = workdir / "client.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCH_DIR / "search.py"),
        "--client",
        str(path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    phases: dict[str, Any] = {}
    current: str | None = None
    before: dict[str, float] = {}
    cpu0 = time.process_time()
    result: dict[str, Any] = {}
    limit = time.monotonic() + sum(w + d + 60 for w, d in cfg["phase_times"].values()) + 120
    try:
        while time.monotonic() < limit:
            raw = await asyncio.wait_for(proc.stdout.readline(), timeout=max(1.0, limit - time.monotonic()))
            if not raw:
                break
            line = raw.decode().strip()
            if line.startswith("PHASE "):
                current = line.split()[1]
                container.cache.ttl_seconds = 0 if current == "uncached" else ttl
                proc.stdin.write(b"go\n")
                await proc.stdin.drain()
            elif line == "MEASURE_START":
                before = cache_counts()
                cpu0 = time.process_time()
            elif line == "MEASURE_END" and current is not None:
                after = cache_counts()
                delta = {k: after[k] - before[k] for k in after}
                cpu = time.process_time() - cpu0
                lookups = delta["hit"] + delta["miss"] + delta["coalesced"] + delta["error"]
                phases[current] = {
                    "cache": {k: int(v) for k, v in delta.items() if not k.endswith("_seconds")},
                    "hit_ratio": round(delta["hit"] / lookups, 4) if lookups else None,
                    # Time inside the cache layer per leg look-up, as the server measured it.
                    "server_cpu_s": round(cpu, 2),
                    "server_mean_hit_ms": round(1000 * delta["hit_seconds"] / delta["hit"], 3)
                    if delta["hit"]
                    else None,
                    "server_mean_miss_ms": round(1000 * delta["miss_seconds"] / delta["miss"], 3)
                    if delta["miss"]
                    else None,
                }
            elif line.startswith("RESULT "):
                result = json.loads(line[len("RESULT ") :])
                break
        await asyncio.wait_for(proc.wait(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()  # our own child, by its handle
            await proc.wait()
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=30)
    if proc.returncode:
        raise SystemExit(f"load generator exited with {proc.returncode}")
    for name, res in result.items():
        phase = phases.setdefault(name, {})
        phase.update(res)
        if phase.get("searches") and "server_cpu_s" in phase:
            # The app's CPU per search (holds and dispatch included): what the machine's load cannot skew.
            phase["server_cpu_ms_per_search"] = round(1000 * phase["server_cpu_s"] / phase["searches"], 2)
    return phases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--client", help=argparse.SUPPRESS)
    ap.add_argument("--database-url", default="postgresql+asyncpg://root@127.0.0.1:5432/skybook_bench_search")
    ap.add_argument("--admin-database", default="postgres")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    ap.add_argument("--duration", type=int, default=60, help="Measured seconds of the zipf phase.")
    ap.add_argument(
        "--warmup-searches",
        type=int,
        default=20_000,
        help="The zipf phase is measured after this many searches (cache warm-up; 0: --warmup seconds only).",
    )
    ap.add_argument("--warmup", type=int, default=900, help="At most this many seconds of zipf warm-up.")
    ap.add_argument("--short-duration", type=int, default=20, help="Measured seconds of the hot and uncached phases.")
    ap.add_argument("--clients", type=int, default=16, help="Concurrent searching clients (closed loop).")
    ap.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent over the route-days.")
    ap.add_argument(
        "--look-to-book", type=int, default=30, help="Searches per background hold (zipf and uncached phases)."
    )
    ap.add_argument("--ttl", type=float, default=None, help="SKYBOOK_CACHE_TTL_SECONDS (default: the setting's).")
    ap.add_argument("--seed-days", type=int, default=14)
    ap.add_argument("--phases", default="zipf,hot,uncached")
    ap.add_argument("--request-timeout", type=float, default=10.0)
    args = ap.parse_args()
    if args.client:
        client_entry(args.client)
        return
    for url in (args.database_url, args.redis_url):
        if not url.split("@")[-1].split("//")[-1].startswith(("127.0.0.1", "localhost")):
            raise SystemExit("the benchmark only talks to services on 127.0.0.1")
    if not args.database_url.startswith("postgresql"):
        raise SystemExit("the benchmark needs PostgreSQL (--database-url postgresql+asyncpg://...)")

    workdir = Path(tempfile.mkdtemp(prefix="skybook-search-bench-"))
    prefix = f"bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    env = {
        "SKYBOOK_DATABASE_URL": args.database_url,
        "SKYBOOK_REDIS_URL": args.redis_url,
        "SKYBOOK_CACHE_KEY_PREFIX": prefix,
        "SKYBOOK_RUN_WORKERS": "true",
        "SKYBOOK_DATA_DIR": str(workdir / "data"),
        "SKYBOOK_LOG_LEVEL": "WARNING",
        "SKYBOOK_DOCS_ENABLED": "false",
        "SKYBOOK_ANONYMOUS_RATE_LIMIT": "100000",
    }
    if args.ttl is not None:
        env["SKYBOOK_CACHE_TTL_SECONDS"] = str(args.ttl)
    os.environ.update(env)  # read by Settings() in this process and by the CLI children
    cli_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
    }

    t0 = time.monotonic()
    asyncio.run(bb.reset_database(args.database_url, args.admin_database, force=False))
    bb.skybook_cli(["db", "upgrade"], cli_env, 300)
    seed_out = bb.skybook_cli(["seed", "demo", "--days", str(args.seed_days)], cli_env, 600)
    password = re.search(r"password (\S+):", seed_out)
    if password is None:
        raise SystemExit("the demo seed printed no password")
    # Keep the demo seat limits (holds can sell classes out, as in life); lift the plan caps only.
    _, counts, emails = asyncio.run(bb.prepare_inventory(args.database_url, raise_limits=False, agents=8))
    days = asyncio.run(route_days(args.database_url))
    setup_s = round(time.monotonic() - t0, 1)

    from skybook.settings import Settings

    settings = Settings()
    cfg = {
        "port": bb.free_port(),
        "route_days": days,
        "zipf_s": args.zipf,
        "clients": args.clients,
        "look_to_book": args.look_to_book,
        "warmup_searches": args.warmup_searches,
        "phase_times": {
            "zipf": (args.warmup, args.duration),
            "hot": (5, args.short_duration),
            "uncached": (5, args.short_duration),
        },
        "request_timeout_s": args.request_timeout,
        "emails": emails,
        "password": password.group(1),
        "phases": [p.strip() for p in args.phases.split(",") if p.strip()],
        "seed": 11,
    }
    cfg["base_url"] = f"http://127.0.0.1:{cfg['port']}"
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    try:
        phases = asyncio.run(serve_and_drive(args, cfg, workdir))
    finally:
        asyncio.run(drop_prefix(args.redis_url, prefix))

    distinct_queries = len(days) * len(PARTIES) * len(CABINS)
    distinct_legs = len(days) * len(CABINS)
    load = os.getloadavg()
    report: dict[str, Any] = {
        "benchmark": "search",
        "load_average_at_end": [round(x, 2) for x in load],
        "settings": {
            "database_url": args.database_url,
            "redis_url": args.redis_url,
            "server": "in-process uvicorn, 1 process, embedded dispatcher",
            "cache_ttl_seconds": settings.cache_ttl_seconds,
            "cache_ttl_jitter": settings.cache_ttl_jitter,
            "clients": args.clients,
            "zipf_warmup_searches": args.warmup_searches,
            "zipf_warmup_max_s": args.warmup,
            "zipf_duration_s": args.duration,
            "hot_and_uncached_duration_s": args.short_duration,
            "load_generator": "aiohttp (separate process, keep-alive, uvloop)",
        },
        "workload": {
            "route_days": len(days),
            "distinct_queries": distinct_queries,
            "distinct_cached_legs": distinct_legs,
            "zipf_s_over_route_days": args.zipf,
            "party_mix": {f"{a}A{c}C{i}I": w for (a, c, i), w in PARTIES},
            "cabin_mix": dict(CABINS),
            "searches_per_hold": args.look_to_book,
            "hot_queries": HOT_QUERIES,
        },
        "git": bb.git_commit(),
        "machine": bb.machine(),
        "data": {**counts, "setup_s": setup_s},
        "results": phases,
    }
    zipf_phase = phases.get("zipf", {})
    summary: dict[str, Any] = {
        "hit_ratio_zipf": zipf_phase.get("hit_ratio"),
        "searches_per_second_zipf": zipf_phase.get("searches_per_second"),
        "cached_searches_per_second_hot": phases.get("hot", {}).get("searches_per_second"),
        "uncached_searches_per_second": phases.get("uncached", {}).get("searches_per_second"),
        "server_cpu_ms_per_search": {p: r.get("server_cpu_ms_per_search") for p, r in phases.items()},
        "holds_during_zipf": zipf_phase.get("holds_during_measurement"),
        "invalidated_route_days_during_zipf": zipf_phase.get("cache", {}).get("invalidated_tags"),
    }
    summary["hit_ratio_definition"] = (
        "per leg look-up: hit / (hit + miss + coalesced + error) of skybook_cache_requests_total{cache='search'} "
        "over the measured window; a one-way search looks up exactly one leg, so per search request it is the "
        "same figure (a round trip would look up two)"
    )
    cache_delta = zipf_phase.get("cache", {})
    lookups = sum(cache_delta.get(k, 0) for k in ("hit", "miss", "coalesced", "error"))
    if lookups and zipf_phase.get("searches_per_second"):
        stale_share = cache_delta.get("miss_stale", 0) / lookups
        expired = steady_state_cold_share(
            len(days), args.zipf, zipf_phase["searches_per_second"], settings.cache_ttl_seconds
        )
        summary["misses_zipf"] = {
            "cold": cache_delta.get("miss_cold", 0),
            "stale_after_invalidation": cache_delta.get("miss_stale", 0),
            "coalesced": cache_delta.get("coalesced", 0),
        }
        summary["steady_state_model"] = {
            "expired_miss_share": round(expired, 4),
            "hit_ratio": round(1 - expired - stale_share, 4),
            "note": "a server running for hours at the measured rate: every leg misses once per TTL it is asked "
            "for (Poisson arrivals), plus the measured stale share; a model, not a measurement",
        }
    if summary["hit_ratio_zipf"] is not None:
        summary["targets_met"] = {"hit_ratio>=0.95": summary["hit_ratio_zipf"] >= 0.95}
    report["summary"] = summary
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
