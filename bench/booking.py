"""Booking benchmark: holds/s, complete bookings/s, open-loop hold latency, and pgbench on the same hold.

One command resets a PostgreSQL bench database, migrates and seeds it, starts ``skybook serve``
on a free 127.0.0.1 port, drives it from a separate load-generator process, runs pgbench on the
same hold transaction, stops the server it started and prints one JSON document::

    .venv/bin/python bench/booking.py \\
        --database-url postgresql+asyncpg://root@127.0.0.1:5432/skybook_bench --duration 20

Phases (each after a short warm-up that is not measured):

* ``closed_holds``  closed loop, N clients each sending POST /v1/holds back to back;
* ``bookings``      closed loop, N clients each doing hold -> confirm (POST /v1/orders) -> pay;
* ``open_holds``    open loop at a fixed offered rate; latency counts from the *scheduled* send time,
  so a slow answer delays nothing and coordinated omission cannot hide a stall;
* ``pgbench``       bench/hold.sql (the statements of one hold) with 8 and 64 clients, server stopped.

The load generator is aiohttp (keep-alive pool, pre-encoded bodies, uvloop when installed) in
its own process; it reports its own CPU time so its share of the 2-core machine is visible.
Only 127.0.0.1 is ever contacted; every loop is bounded in count and in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
HOLD_SQL = BENCH_DIR / "hold.sql"
CLK_TCK = os.sysconf("SC_CLK_TCK")

PASSENGER = {"type": "ADT", "given_name": "Ada", "family_name": "Lovelace", "date_of_birth": "1985-04-12"}
CONTACT = {"email": "bench@skybook.dev"}
CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2035, "cvc": "123", "holder": "Ada Lovelace"}


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def latency_summary(latencies_s: list[float]) -> dict[str, float | None]:
    values = sorted(latencies_s)

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 2)

    return {
        "p50_ms": ms(percentile(values, 50)),
        "p90_ms": ms(percentile(values, 90)),
        "p99_ms": ms(percentile(values, 99)),
        "max_ms": ms(values[-1] if values else None),
        "mean_ms": ms(sum(values) / len(values) if values else None),
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def git_commit() -> dict[str, Any]:
    def run(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    return {"commit": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain", "--untracked-files=no"))}


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "python": sys.version.split()[0],
    }


# --------------------------------------------------------------------------------------------
# CPU accounting from /proc (read only): whole machine, the server's processes, PostgreSQL
# --------------------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int, float] | None:
    """(comm, ppid, cpu seconds) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            raw = fh.read()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def _all_procs() -> dict[int, tuple[str, int, float]]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _proc_stat(int(name))
            if st is not None:
                out[int(name)] = st
    return out


def _machine_busy() -> tuple[float, float]:
    with open("/proc/stat", encoding="utf-8") as fh:
        parts = [int(x) for x in fh.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return (sum(parts) - idle) / CLK_TCK, sum(parts) / CLK_TCK


class CpuMeter:
    """CPU seconds used between start() and stop() by the machine, a process tree and postgres."""

    def __init__(self, server_pid: int | None, database: str | None = None) -> None:
        self.server_pid = server_pid
        self.database = database

    def _sample(self) -> dict[str, Any]:
        procs = _all_procs()
        tree: set[int] = set()
        if self.server_pid is not None:
            tree.add(self.server_pid)
            changed = True
            while changed:
                changed = False
                for pid, (_, ppid, _) in procs.items():
                    if ppid in tree and pid not in tree:
                        tree.add(pid)
                        changed = True
        postgres: dict[int, float] = {}
        bench_backends: set[int] = set()
        for pid, (comm, _, cpu) in procs.items():
            if comm.startswith("postgres"):
                postgres[pid] = cpu
                if self.database and _is_backend_of(pid, self.database):
                    bench_backends.add(pid)
        busy, total = _machine_busy()
        return {
            "machine_busy": busy,
            "machine_total": total,
            "server": {p: procs[p][2] for p in tree if p in procs},
            "postgres": postgres,
            "bench_backends": bench_backends,
        }

    @staticmethod
    def _grown(before: dict[int, float], after: dict[int, float], only: set[int] | None = None) -> float:
        # Per process, so one that exits between the samples cannot make the sum negative.
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items() if only is None or pid in only)

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._s0 = self._sample()

    def stop(self) -> dict[str, Any]:
        s1 = self._sample()
        s0 = self._s0
        wall = time.monotonic() - self._t0
        server = self._grown(s0["server"], s1["server"])
        pg_all = self._grown(s0["postgres"], s1["postgres"])
        pg_bench = self._grown(s0["postgres"], s1["postgres"], only=s1["bench_backends"])
        d_busy = s1["machine_busy"] - s0["machine_busy"]
        d_total = s1["machine_total"] - s0["machine_total"]
        ncpu = os.cpu_count() or 1
        busy_cores = ncpu * d_busy / d_total if d_total else 0.0
        return {
            "wall_s": round(wall, 2),
            "machine_busy_pct": round(100 * busy_cores / ncpu, 1),
            "server_cores": round(server / wall, 2),
            # Backends connected to the bench database, and every postgres process (others' too).
            "postgres_bench_cores": round(pg_bench / wall, 2),
            "postgres_all_cores": round(pg_all / wall, 2),
            "server_cpu_s": round(server, 2),
            "postgres_bench_cpu_s": round(pg_bench, 2),
            # Whatever else ran (the load generator, the kernel, other users of the machine).
            "rest_cores": round(max(0.0, busy_cores - (server + pg_all) / wall), 2),
        }


def _is_backend_of(pid: int, database: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().decode(errors="replace")
    except OSError:
        return False
    # A backend's title is "postgres: 15/main: USER DATABASE HOST(PORT) STATE".
    return f" {database} " in cmd


def wait_for_quiet(max_wait_s: float, busy_below_pct: float = 25.0) -> dict[str, float]:
    """Wait (bounded) until the machine is mostly idle, so another user's job does not skew a phase."""
    t0 = time.monotonic()
    pct = 100.0
    while time.monotonic() - t0 < max_wait_s:
        b0, a0 = _machine_busy()
        time.sleep(1.0)
        b1, a1 = _machine_busy()
        pct = 100 * (b1 - b0) / max(1e-9, a1 - a0)
        if pct < busy_below_pct:
            break
    return {"waited_s": round(time.monotonic() - t0, 1), "busy_pct_before": round(pct, 1)}


# --------------------------------------------------------------------------------------------
# Load generator (runs in its own process: ``booking.py --client CONFIG.json``)
# --------------------------------------------------------------------------------------------


async def _client_main(cfg: dict[str, Any]) -> dict[str, Any]:
    import aiohttp
    import orjson

    targets: list[list[str]] = cfg["targets"]
    rng = random.Random(cfg.get("seed", 1))
    hold_bodies = [
        orjson.dumps({"segments": [{"flight_id": f, "booking_class": c}], "passengers": {"adults": 1}})
        for f, c in targets
    ]
    tokens: list[str] = cfg.get("tokens") or []
    auth = [{"Content-Type": "application/json", "Authorization": f"Bearer {t}"} for t in tokens] or [
        {"Content-Type": "application/json"}
    ]
    timeout = aiohttp.ClientTimeout(total=cfg["request_timeout_s"])
    limit = cfg["connections"]
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, use_dns_cache=True, keepalive_timeout=60)
    loop = asyncio.get_running_loop()
    phase = cfg["phase"]
    warmup, duration = cfg["warmup_s"], cfg["duration_s"]
    idem = cfg.get("idempotency_keys", False)
    counter = iter(range(10**12))

    def headers(who: int) -> dict[str, str]:
        # Each client acts as its own principal (token), like 64 agents of one agency.
        base = auth[who % len(auth)]
        if not idem:
            return base
        return {**base, "Idempotency-Key": f"bench-{os.getpid()}-{next(counter)}"}

    # Every sample: (start_time, latency_s, outcome) with outcome "ok", "sold_out" or an error label.
    samples: list[tuple[float, float, str]] = []
    errors: dict[str, int] = {}
    error_examples: list[str] = []

    def note_error(label: str, body: bytes = b"") -> None:
        errors[label] = errors.get(label, 0) + 1
        if len(error_examples) < 5:
            error_examples.append(f"{label}: {body[:300].decode(errors='replace')}")

    async def post(session: aiohttp.ClientSession, who: int, path: str, body: bytes) -> tuple[int, bytes]:
        async with session.post(path, data=body, headers=headers(who)) as resp:
            return resp.status, await resp.read()

    pay_accepted = [0]  # payments answered 202 (tickets followed by polling)

    async def poll_ticketed(session: aiohttp.ClientSession, who: int, path: str) -> tuple[int, bytes]:
        status, body = 0, b""
        # Bounded in count and in time: never past the end of the measured window (plus a moment).
        deadline = min(loop.time() + cfg["request_timeout_s"], measure_to + 2)
        for _ in range(200):
            if loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
            async with session.get(path, headers=headers(who)) as resp:
                status, body = resp.status, await resp.read()
            if status != 200 or b'"ticketed"' in body:
                break
        return status, body

    raw_pool: Any = None
    raw_headers: list[bytes] = []
    if cfg.get("http_client", "raw") == "raw" and phase in ("closed_holds", "open_holds"):
        from urllib.parse import urlsplit

        from rawhttp import HttpError, RawHttpPool  # this directory

        url = urlsplit(cfg["base_url"])
        raw_pool = RawHttpPool(
            url.hostname or "127.0.0.1", url.port or 80, max_connections=limit, timeout_s=cfg["request_timeout_s"]
        )
        raw_headers = ["".join(f"{k}: {v}\r\n" for k, v in h.items()).encode() for h in auth]
        raw_errors: tuple[type[BaseException], ...] = (HttpError,)
    else:
        raw_errors = ()

    async def post_hold(session: aiohttp.ClientSession, who: int, body: bytes) -> tuple[int, bytes]:
        if raw_pool is None:
            return await post(session, who, "/v1/holds", body)
        head = raw_headers[who % len(raw_headers)]
        if idem:
            head += f"Idempotency-Key: bench-{os.getpid()}-{next(counter)}\r\n".encode()
        status, answer = await raw_pool.request("POST", "/v1/holds", head, body)
        return status, answer

    async def one_hold(session: aiohttp.ClientSession, who: int) -> str:
        try:
            status, body = await post_hold(session, who, hold_bodies[rng.randrange(len(hold_bodies))])
        except (aiohttp.ClientError, TimeoutError, *raw_errors) as exc:
            note_error(f"hold:{type(exc).__name__}")
            return "error"
        if status == 201:
            return "ok"
        if status == 409 and b'"sold_out"' in body:
            return "sold_out"
        note_error(f"hold:{status}", body)
        return "error"

    async def one_booking(session: aiohttp.ClientSession, who: int) -> str:
        try:
            status, body = await post(session, who, "/v1/holds", hold_bodies[rng.randrange(len(hold_bodies))])
            if status != 201:
                if status == 409 and b'"sold_out"' in body:
                    return "sold_out"
                note_error(f"hold:{status}", body)
                return "error"
            order_id = orjson.loads(body)["id"]
            confirm = orjson.dumps({"hold_id": order_id, "passengers": [PASSENGER], "contact": CONTACT})
            status, body = await post(session, who, "/v1/orders", confirm)
            if status != 201:
                note_error(f"confirm:{status}", body)
                return "error"
            status, body = await post(session, who, f"/v1/orders/{order_id}/payments", orjson.dumps({"card": CARD}))
            if status == 202:
                # Paid, tickets still on their way: do what a client is told to do - poll the order.
                pay_accepted[0] += 1
                status, body = await poll_ticketed(session, who, f"/v1/orders/{order_id}")
            if status != 200 or b'"ticketed"' not in body:
                note_error(f"pay:{status}", body)
                return "error"
            return "ok"
        except (aiohttp.ClientError, TimeoutError) as exc:
            note_error(f"{type(exc).__name__}")
            return "error"

    usage0 = os.times()
    async with aiohttp.ClientSession(
        base_url=cfg["base_url"], connector=connector, timeout=timeout, skip_auto_headers=("User-Agent",)
    ) as session:
        t_start = loop.time()
        measure_from = t_start + warmup
        measure_to = measure_from + duration
        hard_stop = measure_to + cfg["request_timeout_s"] + 5
        usage_at_measure: list[os.times_result] = []

        if phase in ("closed_holds", "bookings"):
            op = one_hold if phase == "closed_holds" else one_booking

            async def worker(who: int) -> None:
                # Bounded by time (measure_to) and, defensively, by count.
                for _ in range(10_000_000):
                    start = loop.time()
                    if start >= measure_to:
                        return
                    outcome = await op(session, who)
                    samples.append((start, loop.time() - start, outcome))

            async def mark_measure_start() -> None:
                await asyncio.sleep(warmup)
                usage_at_measure.append(os.times())

            marker = asyncio.create_task(mark_measure_start())
            await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(cfg["clients"]))), hard_stop - t_start)
            await marker
            send_lag: list[float] = []
        elif phase == "open_holds":
            rate = cfg["rate"]
            n = int(rate * (warmup + duration))
            interval = 1.0 / rate
            pending: set[asyncio.Task[None]] = set()
            send_lag = []
            first = loop.time() + 0.05
            measure_from = first + warmup
            measure_to = measure_from + duration

            async def fire(scheduled: float, who: int) -> None:
                send_lag.append(loop.time() - scheduled)
                outcome = await one_hold(session, who)
                samples.append((scheduled, loop.time() - scheduled, outcome))

            measured_marked = False
            for i in range(n):
                scheduled = first + i * interval
                if not measured_marked and scheduled >= measure_from:
                    usage_at_measure.append(os.times())
                    measured_marked = True
                delay = scheduled - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(fire(scheduled, i))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending:
                _, still = await asyncio.wait(pending, timeout=cfg["request_timeout_s"] + 5)
                for t in still:
                    t.cancel()
                    note_error("unfinished")
        else:
            raise SystemExit(f"unknown phase {phase}")
        t_end = loop.time()
    usage1 = os.times()
    if raw_pool is not None:
        await raw_pool.close()
    u0 = usage_at_measure[0] if usage_at_measure else usage0

    measured = [s for s in samples if measure_from <= s[0] < measure_to]
    ok = [lat for _, lat, outcome in measured if outcome == "ok"]
    sold_out = sum(1 for s in measured if s[2] == "sold_out")
    failed = sum(1 for s in measured if s[2] == "error")
    client_cpu = (usage1.user + usage1.system) - (u0.user + u0.system)
    result: dict[str, Any] = {
        "completed_ok": len(ok),
        "completed_incl_warmup": sum(1 for s in samples if s[2] != "error"),
        "per_second": round(len(ok) / duration, 1),
        "sold_out": sold_out,
        "errors": failed,
        "error_kinds": errors,
        "error_examples": error_examples,
        **latency_summary(ok),
        "client_cpu_cores": round(client_cpu / max(1e-9, t_end - (measure_from if usage_at_measure else t_start)), 2),
    }
    if phase == "bookings":
        result["payments_answered_202_then_polled"] = pay_accepted[0]
    if phase == "open_holds":
        answered_n = sum(1 for s in measured if s[2] != "error")
        result["offered_per_second"] = cfg["rate"]
        result["scheduled_in_window"] = len(measured)
        result["achieved_per_second"] = round(answered_n / duration, 1)
        # Latency of every answered request (ok or sold_out) from its scheduled time.
        answered = [lat for _, lat, outcome in measured if outcome != "error"]
        result["latency_from_schedule"] = latency_summary(answered)
        lag = sorted(send_lag)
        result["client_send_lag_p99_ms"] = round((percentile(lag, 99) or 0) * 1000, 2)
        result["client_send_lag_max_ms"] = round((lag[-1] if lag else 0) * 1000, 2)
    return result


def client_entry(config_path: str) -> None:
    cfg = json.loads(Path(config_path).read_text(encoding="utf-8"))
    try:
        import uvloop

        uvloop.install()
        cfg["_loop"] = "uvloop"
    except ImportError:  # pragma: no cover - uvloop is a uvicorn[standard] dependency
        pass
    result = asyncio.run(_client_main(cfg))
    result["client_loop"] = cfg.get("_loop", "asyncio")
    print(json.dumps(result))


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------


def pg_dsn(url: str, database: str | None = None) -> str:
    """A libpq/asyncpg DSN from a SQLAlchemy URL, optionally for another database."""
    import sqlalchemy as sa

    u = sa.engine.make_url(url).set(drivername="postgresql")
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


async def reset_database(url: str, admin_db: str, force: bool) -> None:
    import asyncpg
    import sqlalchemy as sa

    name = sa.engine.make_url(url).database
    if not name or not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise SystemExit(f"refusing to reset database {name!r}: use a plain name")
    if "bench" not in name and not force:
        raise SystemExit(f"refusing to drop {name!r}: its name lacks 'bench' (pass --force-reset to insist)")
    conn = await asyncpg.connect(pg_dsn(url, admin_db), timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


BENCH_AGENT = "bench-agent-{}@skybook.example.com"
DEMO_AGENT = "agent@skybook.example.com"


async def prepare_inventory(
    url: str, raise_limits: bool, agents: int
) -> tuple[list[list[str]], dict[str, int], list[str]]:
    """Lift limits, add bench agents; return the (flight, class) targets, counts and agent e-mails."""
    import asyncpg

    conn = await asyncpg.connect(pg_dsn(url), timeout=10)
    try:
        if raise_limits:
            # Bench only: so a 20 s run cannot sell a flight out, every counter gets a very high ceiling.
            await conn.execute("UPDATE booking_classes SET seat_limit = 1000000")
            await conn.execute("UPDATE flight_cabins SET overbooking_limit = 1000000")
        # Bench only: plans cap requests per minute and unpaid seats per principal far below a
        # load test's rate; lift the caps (the checks still run on every request).
        await conn.execute(
            "UPDATE plans SET requests_per_minute = 100000000, tenant_requests_per_minute = 100000000,"
            " max_unpaid_seats = 100000000"
        )
        # One agent per client, in the demo agency, with the demo agent's password, so no single
        # principal piles up every hold (each hold sums its creator's unpaid seats).
        demo = await conn.fetchrow("SELECT tenant_id, password_hash FROM users WHERE email = $1", DEMO_AGENT)
        emails = [BENCH_AGENT.format(i) for i in range(agents)]
        if demo is not None:
            await conn.executemany(
                "INSERT INTO users (id, tenant_id, email, password_hash, role, status, created_at)"
                " VALUES (gen_random_uuid(), $1, $2, $3, 'agent', 'active', now()) ON CONFLICT (email) DO NOTHING",
                [(demo["tenant_id"], e, demo["password_hash"]) for e in emails],
            )
        else:  # a checkout from before authentication: requests go without a token
            emails = []
        rows = await conn.fetch(
            """
            SELECT bc.flight_id::text AS flight_id, bc.code
            FROM booking_classes bc JOIN flights f ON f.id = bc.flight_id
            WHERE bc.is_open AND f.status = 'scheduled' AND f.departure_at > now() + interval '2 hours'
            ORDER BY f.departure_at, f.id, bc.code
            """
        )
        await conn.execute("DROP TABLE IF EXISTS bench_targets")
        await conn.execute(
            "CREATE TABLE bench_targets (n int PRIMARY KEY, flight_id uuid NOT NULL, code text NOT NULL)"
        )
        await conn.copy_records_to_table(
            "bench_targets",
            records=[(i, r["flight_id"], r["code"]) for i, r in enumerate(rows, start=1)],
            columns=["n", "flight_id", "code"],
        )
        await conn.execute("ANALYZE")
        flights = await conn.fetchval("SELECT count(*) FROM flights")
    finally:
        await conn.close()
    targets = [[r["flight_id"], r["code"]] for r in rows]
    return targets, {"flights": int(flights), "booking_classes": len(rows), "agents": len(emails)}, emails


async def pg_stats(url: str) -> dict[str, int]:
    """Sessions opened and transactions committed in the bench database so far (pg_stat_database)."""
    import asyncpg
    import sqlalchemy as sa

    conn = await asyncpg.connect(pg_dsn(url), timeout=10)
    try:
        row = await conn.fetchrow(
            "SELECT sessions, xact_commit, xact_rollback FROM pg_stat_database WHERE datname = $1",
            sa.engine.make_url(url).database,
        )
    finally:
        await conn.close()
    return {k: int(row[k]) for k in ("sessions", "xact_commit", "xact_rollback")}


def stats_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    # The stats collector reports with a small delay; good enough for counts over a whole phase.
    return {
        "pg_sessions_opened": after["sessions"] - before["sessions"],
        "pg_commits": after["xact_commit"] - before["xact_commit"],
        "pg_rollbacks": after["xact_rollback"] - before["xact_rollback"],
    }


async def outbox_pending(url: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(pg_dsn(url), timeout=10)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM outbox WHERE dispatched_at IS NULL"))
    finally:
        await conn.close()


def wait_outbox_drained(url: str, timeout_s: float) -> dict[str, Any]:
    """Let the dispatcher catch up before the next phase (bounded in time)."""
    t0 = time.monotonic()
    pending = asyncio.run(outbox_pending(url))
    at_end = pending
    while pending and time.monotonic() - t0 < timeout_s:
        time.sleep(0.5)
        pending = asyncio.run(outbox_pending(url))
    return {"outbox_backlog_at_end": at_end, "drain_s": round(time.monotonic() - t0, 1), "left": pending}


def skybook_cli(args: list[str], env: dict[str, str], timeout: float) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "skybook.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise SystemExit(f"skybook {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout.strip()


class Server:
    """``skybook serve`` started in its own session; stopped by its own PID (process group)."""

    def __init__(self, env: dict[str, str], workers: int, log_path: Path, *, auth: bool = True) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        command = ["-m", "skybook.cli", "serve"]
        if not auth:
            # The same app with authentication and rate limiting off (bench/unauthenticated_app.py).
            path = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(ROOT)]))
            env = {**env, "SKYBOOK_BENCH_WITHOUT_AUTH": "yes", "PYTHONPATH": path}
            command = ["-m", "uvicorn", "bench.unauthenticated_app:create", "--factory", "--no-access-log"]
            command += ["--log-level", "warning"]
        self.proc = subprocess.Popen(
            [sys.executable, *command, "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers)],
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 60) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}; see its log")
            try:
                with urllib.request.urlopen(f"{self.base_url}/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise SystemExit("server did not become ready in time")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


def run_client(cfg: dict[str, Any], workdir: Path) -> dict[str, Any]:
    path = workdir / f"client-{cfg['phase']}.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    limit = cfg["warmup_s"] + cfg["duration_s"] + cfg["request_timeout_s"] + 60
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--client", str(path)],
        capture_output=True,
        text=True,
        timeout=limit,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise SystemExit(f"load generator failed in {cfg['phase']}:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def log_in(base_url: str, emails: list[str], password: str) -> list[str]:
    """An access token per bench agent (OAuth2 password grant at /v1/auth/token)."""
    import urllib.parse
    import urllib.request

    tokens = []
    for email in emails:
        form = urllib.parse.urlencode({"grant_type": "password", "username": email, "password": password})
        req = urllib.request.Request(
            f"{base_url}/v1/auth/token",
            data=form.encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            tokens.append(json.loads(resp.read())["access_token"])
    return tokens


def check_hold_response(base_url: str, target: list[str], token: str | None) -> dict[str, Any]:
    """POST /v1/holds must answer exactly what GET /v1/holds/{id} answers right after."""
    import urllib.request

    body = json.dumps({"segments": [{"flight_id": target[0], "booking_class": target[1]}], "passengers": {"adults": 1}})
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(
        f"{base_url}/v1/holds", data=body.encode(), headers={"Content-Type": "application/json", **auth}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        created = json.loads(resp.read())
        location = resp.headers.get("Location")
        status = resp.status
    with urllib.request.urlopen(urllib.request.Request(f"{base_url}{location}", headers=auth), timeout=10) as resp:
        fetched = json.loads(resp.read())
    return {
        "status": status,
        "location_ok": location == f"/v1/holds/{created['id']}",
        "body_equals_get": created == fetched,
    }


def run_pgbench(url: str, clients: int, duration: int, ntargets: int, threads: int) -> dict[str, Any]:
    pgbench = shutil.which("pgbench") or "/usr/bin/pgbench"
    import sqlalchemy as sa

    u = sa.engine.make_url(url)
    cmd = [
        pgbench,
        "-n",
        "-M",
        "prepared",
        "-f",
        str(HOLD_SQL),
        "-c",
        str(clients),
        "-j",
        str(threads),
        "-T",
        str(duration),
        "-D",
        f"ntargets={ntargets}",
        "-h",
        u.host or "127.0.0.1",
        "-p",
        str(u.port or 5432),
        "-U",
        u.username or "postgres",
        u.database or "",
    ]
    env = dict(os.environ)
    if u.password:
        env["PGPASSWORD"] = u.password
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120, env=env)
    out = proc.stdout + proc.stderr
    tps = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
    lat = re.search(r"latency average = ([0-9.]+) ms", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    processed = re.search(r"number of transactions actually processed: (\d+)", out)
    if proc.returncode != 0 or tps is None:
        return {"clients": clients, "error": out[-2000:]}
    return {
        "clients": clients,
        "threads": threads,
        "tps": round(float(tps.group(1)), 1),
        "latency_avg_ms": float(lat.group(1)) if lat else None,
        "transactions": int(processed.group(1)) if processed else None,
        "failed": int(failed.group(1)) if failed else 0,
    }


def run_wrk(
    base_url: str, targets: list[list[str]], tokens: list[str], clients: int, duration: int, workdir: Path
) -> dict[str, Any]:
    """Optional cross-check of closed_holds with wrk (a C load generator), if it is installed."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return {"skipped": "wrk not installed (apt-get install wrk)"}
    bodies = ",\n".join(
        "'" + json.dumps({"segments": [{"flight_id": f, "booking_class": c}], "passengers": {"adults": 1}}) + "'"
        for f, c in targets
    )
    auth = ", ".join(f"'Bearer {t}'" for t in tokens)
    script = workdir / "holds.lua"
    script.write_text(
        f"""
local bodies = {{ {bodies} }}
local tokens = {{ {auth} }}
math.randomseed(7)
request = function()
  local headers = {{ ["Content-Type"] = "application/json" }}
  if #tokens > 0 then headers["Authorization"] = tokens[math.random(#tokens)] end
  return wrk.format("POST", "/v1/holds", headers, bodies[math.random(#bodies)])
end
done = function(summary, latency, requests)
  io.write(string.format("WRKJSON {{\\"requests\\": %d, \\"duration_us\\": %d, \\"p50_us\\": %d, \\"p99_us\\": %d, "
    .. "\\"max_us\\": %d, \\"socket_errors\\": %d, \\"status_errors\\": %d}}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
""",
        encoding="utf-8",
    )
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(
        [wrk, "-t1", f"-c{clients}", f"-d{duration}s", "--timeout", "10s", "-s", str(script), f"{base_url}/v1/holds"],
        capture_output=True,
        text=True,
        timeout=duration + 60,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    wrk_wall = max(1e-9, time.monotonic() - t0)
    m = re.search(r"WRKJSON (\{.*\})", proc.stdout)
    if not m:
        return {"error": (proc.stdout + proc.stderr)[-2000:]}
    raw = json.loads(m.group(1))
    return {
        "completed_incl_warmup": raw["requests"],  # wrk has no warm-up: every request counts
        "per_second": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "max_ms": round(raw["max_us"] / 1000, 2),
        "errors": raw["socket_errors"] + raw["status_errors"],
        "client_cpu_cores": round(wrk_cpu / wrk_wall, 2),
        "note": "errors = socket errors + HTTP status >= 400 (wrk's own count)",
    }


def wrk_phase(
    args: argparse.Namespace,
    server: Server,
    targets: list[list[str]],
    tokens: list[str],
    bench_db: str | None,
    workdir: Path,
) -> dict[str, Any]:
    """closed_holds driven by wrk: an unmeasured warm-up run, then the measured run with the CPU meter."""
    run_wrk(server.base_url, targets, tokens, args.clients, max(1, args.warmup), workdir)
    quiet = wait_for_quiet(args.quiet_wait)
    meter = CpuMeter(server.proc.pid, bench_db)
    stats0 = asyncio.run(pg_stats(args.database_url))
    meter.start()
    res = run_wrk(server.base_url, targets, tokens, args.clients, args.duration, workdir)
    res["cpu"] = meter.stop()
    res["cpu"]["before"] = quiet
    res["database"] = stats_delta(stats0, asyncio.run(pg_stats(args.database_url)))
    res["client"] = "wrk (1 thread, keep-alive, one connection per client)"
    done = max(1, res.get("completed_incl_warmup", 0))
    res["cpu"]["server_cpu_ms_per_op"] = round(1000 * res["cpu"]["server_cpu_s"] / done, 2)
    res["cpu"]["postgres_cpu_ms_per_op"] = round(1000 * res["cpu"]["postgres_bench_cpu_s"] / done, 2)
    if args.run_workers == "true":
        res["dispatcher"] = wait_outbox_drained(args.database_url, timeout_s=180)
    return res


def compare_auth(
    args: argparse.Namespace,
    env: dict[str, str],
    targets: list[list[str]],
    agents: list[str],
    demo_password: re.Match[str] | None,
    bench_db: str | None,
    workdir: Path,
    log_path: Path,
) -> dict[str, Any]:
    """Closed-loop holds with and without authentication + rate limits, alternating, one run."""
    rounds: dict[str, list[dict[str, Any]]] = {"with_auth": [], "without_auth": []}
    tokens: list[str] = []
    for i in range(args.auth_compare):
        for variant in ("with_auth", "without_auth"):
            server = Server(env, args.workers, log_path, auth=variant == "with_auth")
            try:
                server.wait_ready()
                if not tokens and demo_password:
                    tokens = log_in(server.base_url, agents, demo_password.group(1))
                cfg = {
                    **client_cfg(args, server.base_url, targets, tokens, idempotency_keys=False),
                    "phase": "closed_holds",
                    "seed": 100 + i,
                }
                quiet = wait_for_quiet(args.quiet_wait)
                meter = CpuMeter(server.proc.pid, bench_db)
                meter.start()
                res = run_client(cfg, workdir)
                cpu = meter.stop()
            finally:
                server.stop()
            done = max(1, res["completed_incl_warmup"])
            rounds[variant].append(
                {
                    "holds_per_s": res["per_second"],
                    "p99_ms": res["p99_ms"],
                    "errors": res["errors"],
                    "server_cpu_ms_per_hold": round(1000 * cpu["server_cpu_s"] / done, 2),
                    "server_cores": cpu["server_cores"],
                    "other_load_cores": round(max(0.0, cpu["rest_cores"] - res["client_cpu_cores"]), 2),
                    "machine_before": quiet,
                    "loadavg_1m_after": os.getloadavg()[0],
                }
            )
            print(f"[bench] auth_compare {variant} {i + 1}: {json.dumps(rounds[variant][-1])}", file=sys.stderr)

    def median(variant: str, field: str) -> float:
        return round(float(statistics.median(r[field] for r in rounds[variant])), 2)

    with_hps, without_hps = median("with_auth", "holds_per_s"), median("without_auth", "holds_per_s")
    with_cpu, without_cpu = (
        median("with_auth", "server_cpu_ms_per_hold"),
        median("without_auth", "server_cpu_ms_per_hold"),
    )
    return {
        "rounds": rounds,
        "holds_per_s_with_auth": with_hps,
        "holds_per_s_without_auth": without_hps,
        "throughput_loss_pct": round(100 * (1 - with_hps / without_hps), 1) if without_hps else None,
        "server_cpu_ms_per_hold_with_auth": with_cpu,
        "server_cpu_ms_per_hold_without_auth": without_cpu,
        # On a CPU-bound server holds/s scale with 1 / CPU per hold: the load-independent figure.
        "cpu_throughput_loss_pct": round(100 * (1 - without_cpu / with_cpu), 1) if with_cpu else None,
    }


def client_cfg(
    args: argparse.Namespace, base_url: str, targets: Any, tokens: list[str], *, idempotency_keys: bool
) -> dict[str, Any]:
    """What every closed- or open-loop client phase is told, before its phase and seed."""
    return {
        "base_url": base_url,
        "targets": targets,
        "clients": args.clients,
        "connections": args.clients,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "request_timeout_s": args.request_timeout,
        "idempotency_keys": idempotency_keys,
        "tokens": tokens,
        "http_client": args.http_client,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--client", help=argparse.SUPPRESS)
    ap.add_argument("--database-url", default="postgresql+asyncpg://root@127.0.0.1:5432/skybook_bench")
    ap.add_argument("--admin-database", default="postgres", help="Database to connect to for DROP/CREATE.")
    ap.add_argument(
        "--force-reset", action="store_true", help="Allow resetting a database without 'bench' in its name."
    )
    ap.add_argument("--duration", type=int, default=20, help="Measured seconds per phase.")
    ap.add_argument("--warmup", type=int, default=3, help="Unmeasured seconds before each phase.")
    ap.add_argument("--workers", type=int, default=2, help="skybook serve --workers.")
    ap.add_argument("--pool-size", type=int, default=20, help="SKYBOOK_DATABASE_POOL_SIZE per worker.")
    ap.add_argument("--run-workers", choices=["true", "false"], default="true", help="SKYBOOK_RUN_WORKERS.")
    ap.add_argument("--clients", type=int, default=64, help="Concurrent clients of the closed loops.")
    ap.add_argument("--rate", type=int, default=500, help="Offered holds/s of the open loop.")
    ap.add_argument("--pgbench-clients", default="8,64", help="Comma-separated pgbench client counts.")
    ap.add_argument("--phases", default="closed_holds,bookings,open_holds,pgbench")
    ap.add_argument("--idempotency-keys", action="store_true", help="Send a fresh Idempotency-Key on every POST.")
    ap.add_argument("--keep-limits", action="store_true", help="Keep the demo seat limits (sold_out becomes likely).")
    ap.add_argument("--wrk", action="store_true", help="Also measure closed_holds with wrk (if installed).")
    ap.add_argument(
        "--http-client",
        choices=["raw", "aiohttp"],
        default="raw",
        help="HTTP client of the Python load generator's hold phases: bench/rawhttp.py (keep-alive, pre-built"
        " requests, about a tenth of aiohttp's CPU per request) or aiohttp. The bookings phase uses aiohttp.",
    )
    ap.add_argument(
        "--closed-loop-client",
        choices=["auto", "wrk", "aiohttp"],
        default="auto",
        help="Load generator of closed_holds: wrk (C, about a tenth of aiohttp's CPU per request, so more of"
        " the 2 cores go to the system under test) when installed, else the aiohttp client.",
    )
    ap.add_argument("--seed-days", type=int, default=14)
    ap.add_argument("--quiet-wait", type=float, default=60, help="Max seconds to wait for an idle machine per phase.")
    ap.add_argument("--request-timeout", type=float, default=10.0)
    ap.add_argument("--server-log", default=None, help="Where the server's log goes (default: a temp file).")
    ap.add_argument(
        "--auth-compare",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="After the phases: ROUNDS x (closed_holds with authentication and rate limits, then without"
        " them), each on a fresh server; reports holds/s and server CPU per hold of both (issue 3's figure).",
    )
    args = ap.parse_args()
    if args.client:
        client_entry(args.client)
        return
    if not args.database_url.startswith("postgresql"):
        raise SystemExit("the benchmark needs PostgreSQL (--database-url postgresql+asyncpg://...)")
    for host_part in (args.database_url.split("@")[-1].split("/")[0],):
        if not host_part.startswith(("127.0.0.1", "localhost")):
            raise SystemExit("the benchmark only talks to a database on 127.0.0.1")

    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    import sqlalchemy as sa

    bench_db = sa.engine.make_url(args.database_url).database
    workdir = Path(tempfile.mkdtemp(prefix="skybook-bench-"))
    env = {
        **os.environ,
        # The server and the CLI run the code of this checkout, whatever is installed in the venv.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
        "SKYBOOK_DATABASE_URL": args.database_url,
        "SKYBOOK_DATABASE_POOL_SIZE": str(args.pool_size),
        "SKYBOOK_RUN_WORKERS": args.run_workers,
        "SKYBOOK_DATA_DIR": str(workdir / "data"),
        "SKYBOOK_LOG_LEVEL": "WARNING",
        "SKYBOOK_DOCS_ENABLED": "false",
        # The bench logs in one agent per client from 127.0.0.1 at start-up.
        "SKYBOOK_ANONYMOUS_RATE_LIMIT": "100000",
    }
    report: dict[str, Any] = {
        "benchmark": "booking",
        "settings": {
            "database_url": args.database_url,
            "server_workers": args.workers,
            "pool_size_per_worker": args.pool_size,
            "run_workers": args.run_workers == "true",
            "clients": args.clients,
            "open_loop_rate": args.rate,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "idempotency_keys": args.idempotency_keys,
            "seat_limits_raised": not args.keep_limits,
            "load_generator": f"{args.http_client} HTTP client in a separate process (keep-alive, uvloop);"
            " closed_holds by wrk when installed (see closed_holds_client)",
        },
        "git": git_commit(),
        "machine": machine(),
    }

    t0 = time.monotonic()
    asyncio.run(reset_database(args.database_url, args.admin_database, args.force_reset))
    skybook_cli(["db", "upgrade"], env, 300)
    seed_out = skybook_cli(["seed", "demo", "--days", str(args.seed_days)], env, 600)
    seeded = json.loads(next(line for line in seed_out.splitlines() if line.startswith("{")))
    # The bench agents share the demo accounts' password, which the seed prints (development only).
    demo_password = re.search(r"password (\S+):", seed_out)
    targets, counts, agents = asyncio.run(
        prepare_inventory(args.database_url, raise_limits=not args.keep_limits, agents=args.clients)
    )
    report["data"] = {**counts, "seeded": seeded, "setup_s": round(time.monotonic() - t0, 1)}

    results: dict[str, Any] = {}
    server: Server | None = None
    log_path = Path(args.server_log) if args.server_log else workdir / "server.log"
    try:
        if any(p in phases for p in ("closed_holds", "bookings", "open_holds", "wrk")):
            server = Server(env, args.workers, log_path)
            server.wait_ready()
            report["settings"]["server_pid"] = server.proc.pid
            tokens = log_in(server.base_url, agents, demo_password.group(1)) if demo_password else []
            report["settings"]["authenticated_principals"] = len(tokens)
            results["hold_response_check"] = check_hold_response(
                server.base_url, targets[0], tokens[0] if tokens else None
            )
            base_cfg = client_cfg(args, server.base_url, targets, tokens, idempotency_keys=args.idempotency_keys)
            use_wrk = args.closed_loop_client == "wrk" or (
                args.closed_loop_client == "auto" and shutil.which("wrk") is not None
            )
            report["settings"]["closed_holds_client"] = "wrk" if use_wrk else "aiohttp"
            for phase in ("closed_holds", "bookings", "open_holds"):
                if phase not in phases:
                    continue
                if phase == "bookings" and args.run_workers != "true":
                    # Tickets are issued by the event consumers, which only run in the server with
                    # --run-workers true (or in a separate `skybook worker`, which this bench does not start).
                    results[phase] = {"skipped": "needs --run-workers true (tickets are issued by the consumers)"}
                    continue
                if phase == "closed_holds" and use_wrk:
                    results[phase] = wrk_phase(args, server, targets, tokens, bench_db, workdir)
                    brief = {k: results[phase].get(k) for k in ("per_second", "p50_ms", "p99_ms", "errors")}
                    print(f"[bench] {phase} (wrk): {json.dumps(brief)}", file=sys.stderr)
                    continue
                cfg = {**base_cfg, "phase": phase, "seed": len(results) + 1}
                if phase == "open_holds":
                    cfg.update(rate=args.rate, connections=512)
                quiet = wait_for_quiet(args.quiet_wait)
                meter = CpuMeter(server.proc.pid, bench_db)
                stats0 = asyncio.run(pg_stats(args.database_url))
                meter.start()
                res = run_client(cfg, workdir)
                res["cpu"] = meter.stop()
                res["cpu"]["before"] = quiet
                res["database"] = stats_delta(stats0, asyncio.run(pg_stats(args.database_url)))
                done = max(1, res["completed_incl_warmup"])
                res["cpu"]["server_cpu_ms_per_op"] = round(1000 * res["cpu"]["server_cpu_s"] / done, 2)
                res["cpu"]["postgres_cpu_ms_per_op"] = round(1000 * res["cpu"]["postgres_bench_cpu_s"] / done, 2)
                if args.run_workers == "true":
                    res["dispatcher"] = wait_outbox_drained(args.database_url, timeout_s=180)
                results[phase] = res
                brief = {k: res.get(k) for k in ("per_second", "p50_ms", "p99_ms", "errors")}
                print(f"[bench] {phase}: {json.dumps(brief)}", file=sys.stderr)
            if args.wrk or "wrk" in phases:
                quiet = wait_for_quiet(args.quiet_wait)
                meter = CpuMeter(server.proc.pid, bench_db)
                meter.start()
                res = run_wrk(server.base_url, targets, tokens, args.clients, args.duration, workdir)
                res["cpu"] = meter.stop()
                res["cpu"]["before"] = quiet
                done = max(1, res["completed_incl_warmup"])
                res["cpu"]["server_cpu_ms_per_op"] = round(1000 * res["cpu"]["server_cpu_s"] / done, 2)
                res["cpu"]["postgres_cpu_ms_per_op"] = round(1000 * res["cpu"]["postgres_bench_cpu_s"] / done, 2)
                if args.run_workers == "true":
                    res["dispatcher"] = wait_outbox_drained(args.database_url, timeout_s=180)
                results["closed_holds_wrk"] = res
    finally:
        if server is not None:
            server.stop()
    if args.auth_compare:
        results["auth_compare"] = compare_auth(args, env, targets, agents, demo_password, bench_db, workdir, log_path)
    if "pgbench" in phases:
        pg: list[dict[str, Any]] = []
        for c in [int(x) for x in args.pgbench_clients.split(",") if x.strip()]:
            quiet = wait_for_quiet(args.quiet_wait)
            meter = CpuMeter(None, bench_db)
            meter.start()
            r = run_pgbench(args.database_url, c, args.duration, len(targets), threads=2)
            r["cpu"] = meter.stop()
            r["cpu"]["before"] = quiet
            pg.append(r)
            print(f"[bench] pgbench -c {c}: {r.get('tps')} tps", file=sys.stderr)
        results["pgbench"] = pg

    report["results"] = results
    summary: dict[str, Any] = {}
    holds = results.get("closed_holds", {}).get("per_second")
    pg_tps = [r["tps"] for r in results.get("pgbench", []) if "tps" in r]
    if holds is not None:
        summary["holds_per_second"] = holds
        summary["holds_p99_ms"] = results["closed_holds"]["p99_ms"]
        summary["holds_errors"] = results["closed_holds"]["errors"]
        # CPU that other processes took while holds were measured (0 on a dedicated machine).
        summary["other_load_cores_during_holds"] = round(
            max(0.0, results["closed_holds"]["cpu"]["rest_cores"] - results["closed_holds"]["client_cpu_cores"]), 2
        )
    for r in results.get("pgbench", []):
        if holds and "tps" in r:
            summary[f"ratio_vs_pgbench_c{r['clients']}"] = round(holds / r["tps"], 3)
    if holds and pg_tps:
        summary["ratio_vs_best_pgbench"] = round(holds / max(pg_tps), 3)
    if "per_second" in results.get("bookings", {}):
        summary["bookings_per_second"] = results["bookings"]["per_second"]
    if "auth_compare" in results:
        summary["auth_compare"] = {k: v for k, v in results["auth_compare"].items() if k != "rounds"}
    if "open_holds" in results:
        summary["open_loop_p99_ms"] = results["open_holds"]["latency_from_schedule"]["p99_ms"]
    targets_met = {}
    if holds is not None:
        targets_met["holds_per_second>=1000"] = holds >= 1000
    if "ratio_vs_best_pgbench" in summary:
        targets_met["ratio_vs_pgbench>=0.2"] = summary["ratio_vs_best_pgbench"] >= 0.2
    if summary.get("open_loop_p99_ms") is not None and args.rate == 500:
        targets_met["open_loop_500_p99<50ms"] = summary["open_loop_p99_ms"] < 50
    summary["targets_met"] = targets_met
    report["summary"] = summary
    report["server_log"] = str(log_path)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
