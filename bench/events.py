"""Event backbone benchmark: commit -> relay -> broker -> worker -> consumer effect, on PostgreSQL.

For each broker (RabbitMQ, and Kafka through librdkafka's in-memory mock cluster) it resets a
bench database, starts ``skybook relay`` and ``skybook worker`` as subprocesses with one bench
consumer on that broker, and measures:

* ``latency``: open loop at a fixed rate (default 1,000 events/s), one event per transaction;
  propagation = consumer's ``clock_timestamp()`` when it handled the event minus the moment the
  writer's commit returned (same host clock). The first ``--warmup`` seconds (default 1) run at
  the same rate but are reported apart (``latency.warmup``): the step from idle to 1,000 events/s
  costs the first 100 ms some 40 events over 15 ms on a 2-core machine, whichever broker, which
  is the start of the load rather than the rate;
* ``sustained``: writers commit as fast as they can (10 events per transaction); events/s =
  events / (last handled - first commit).

    .venv/bin/python bench/events.py --database-url postgresql+asyncpg://root@127.0.0.1:5432/skybook_bench_events

``--contend 0.5`` runs everything beside one busy loop per core that takes half of it: the figures
on a machine whose cores are shared with other work, or on a slower one.

Prints one JSON document. Only 127.0.0.1 is contacted; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from skybook.platform.dispatcher import Consumer
from skybook.platform.events import Event
from skybook.platform.outbox import outbox_rows
from skybook.platform.uow import UnitOfWork

ROOT = Path(__file__).resolve().parents[1]
EVENT_TYPE = "bench.tick"
_COLUMNS = ("event_id", "type", "version", "context", "occurred_at", "tenant_id", "aggregate_id", "data")
_INSERT = (
    "WITH w AS (INSERT INTO outbox (event_id, type, version, context, occurred_at, tenant_id, aggregate_id, data) "
    "SELECT * FROM unnest($1::uuid[], $2::varchar[], $3::int[], $4::varchar[], $5::timestamptz[], $6::varchar[], "
    "$7::varchar[], $8::text[]::jsonb[]) RETURNING 1) SELECT count(*) FROM w"
)


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# The bench consumer's effects: one row per event, when it was handled (seconds since the epoch).
CREATE_EFFECTS = sa.text("CREATE TABLE bench_effects (event_id text PRIMARY KEY, handled_at float8)")
_RECORD = sa.text("INSERT INTO bench_effects (event_id, handled_at) VALUES (:e, extract(epoch from clock_timestamp()))")
# A batch's effects in one statement (clock_timestamp() is read per row, when the row is written).
_RECORD_MANY = sa.text(
    "INSERT INTO bench_effects (event_id, handled_at) SELECT unnest(:ids), extract(epoch from clock_timestamp())"
).bindparams(sa.bindparam("ids", type_=postgresql.ARRAY(sa.Text)))


# uow.execute: by asyncpg in the workers' units of work, the way a consumer on the hot path writes.
async def _record(event: Event, uow: UnitOfWork) -> None:
    await uow.execute(_RECORD, {"e": str(event.id)})


async def _record_many(events: Sequence[Event], uow: UnitOfWork) -> None:
    await uow.execute(_RECORD_MANY, {"ids": [str(e.id) for e in events]})


def _consumer(name: str, transport: Literal["tasks", "stream"]) -> Consumer:
    if os.environ.get("SKYBOOK_BENCH_PER_EVENT") == "1":  # --per-event: one statement per event
        return Consumer(name, frozenset({EVENT_TYPE}), _record, transport)
    return Consumer(name, frozenset({EVENT_TYPE}), _record, transport, handle_many=_record_many)


def tasks_consumers() -> list[Consumer]:
    """The bench consumer on RabbitMQ (loaded by the worker through SKYBOOK_EXTRA_CONSUMERS)."""
    return [_consumer("bench-tasks", "tasks")]


def stream_consumers() -> list[Consumer]:
    """The bench consumer on Kafka."""
    return [_consumer("bench-stream", "stream")]


def kafka_mock() -> tuple[subprocess.Popen[bytes], str]:
    """librdkafka's in-memory mock cluster in a process of its own (``deploy/cluster/kafka_mock.py``),
    so the CPU it costs is counted apart from the bench's."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "deploy" / "cluster" / "kafka_mock.py"), "--brokers", "1"],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    address = proc.stdout.readline().decode().strip()
    if not address:
        proc.kill()
        raise RuntimeError("mock cluster did not start")
    return proc, address


async def reset_database(url: str, admin_url: str) -> None:
    import asyncpg

    name = sa.engine.make_url(url).database
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_figures(ms: list[float]) -> dict[str, float]:
    """p50, p90, p99 and max of latencies in milliseconds."""
    return {
        "p50_ms": round(percentile(ms, 0.50), 2),
        "p90_ms": round(percentile(ms, 0.90), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "max_ms": round(max(ms), 2),
    }


class Run:
    def __init__(self, args: argparse.Namespace, engine: Any, transport: str, env: dict[str, str]) -> None:
        self.args = args
        self.engine = engine
        self.transport = transport
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.baseline = 0
        self.mock: subprocess.Popen[bytes] | None = None

    def start(self, command: str) -> None:
        log = open(Path(self.args.log_dir) / f"{self.transport}-{command}.log", "wb")  # noqa: SIM115
        argv = [sys.executable, "-m", "skybook.cli", command]
        if self.args.profile:
            # cProfile writes its file when the process exits cleanly (SIGTERM stops it cleanly).
            out = Path(self.args.log_dir) / f"{self.transport}-{command}.prof"
            argv[1:1] = ["-m", "cProfile", "-o", str(out)]
        self.procs.append(subprocess.Popen(argv, env=self.env, stdout=log, stderr=log))

    async def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) used so far by the relay, the worker, their PostgreSQL sessions,
        this process, the Kafka mock cluster's process and the RabbitMQ broker (shared with anything
        else using it on this machine), from /proc (Linux)."""
        found: dict[str, float] = {}
        for name, p in zip(("relay", "worker"), self.procs, strict=False):
            if (cpu := _proc_cpu(p.pid)) is not None:
                found[name] = cpu
        async with self.engine.connect() as conn:
            pids = await conn.scalars(
                sa.text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            # The relay's and the worker's sessions (the writers' are counted by the writer process).
            found["relay_worker_postgres_backends"] = sum(_proc_cpu(pid) or 0.0 for pid in pids)
        found["bench_process"] = time.process_time()
        if self.transport == "rabbitmq" and (broker := _broker_pid()) is not None:
            found["rabbitmq_broker_shared"] = _proc_cpu(broker) or 0.0
        if self.transport == "kafka" and self.mock is not None:
            found["kafka_mock_cluster"] = _proc_cpu(self.mock.pid) or 0.0
        return found

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()

    async def writers_phase(self, phase: str) -> dict[str, Any]:
        """Run one write phase in a writer process of its own (uvloop, raw asyncpg), so the load
        generator neither shares an event loop with this process nor is limited by its GIL."""
        argv = [sys.executable, str(ROOT / "bench" / "events.py"), "--writer-phase", phase]
        argv += ["--database-url", self.args.database_url, "--rate", str(self.args.rate)]
        argv += ["--duration", str(self.args.duration), "--warmup", str(self.args.warmup)]
        argv += ["--writers", str(self.args.writers)]
        argv += ["--sustained-events", str(self.args.sustained_events)]
        proc = await asyncio.create_subprocess_exec(*argv, env=self.env, stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"writer process failed ({proc.returncode})")
        found: dict[str, Any] = json.loads(out)
        return found

    async def count(self) -> int:
        async with self.engine.connect() as conn:
            return int(await conn.scalar(sa.text("SELECT count(*) FROM bench_effects")) or 0)

    async def wait_all(self, ids: set[str], within: float) -> dict[str, float]:
        """Wait until every event in ``ids`` was handled (polling a count, cheap), then read the times."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if await self.count() >= self.baseline + len(ids):
                break
            await asyncio.sleep(0.2)
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.text("SELECT event_id, handled_at FROM bench_effects WHERE event_id = ANY(:ids)"),
                {"ids": list(ids)},
            )
            got = {r.event_id: float(r.handled_at) for r in rows}
        self.baseline = await self.count()
        if len(got) < len(ids):
            raise RuntimeError(f"{self.transport}: only {len(got)} of {len(ids)} events handled in {within}s")
        return got

    async def latency(self) -> dict[str, Any]:
        wrote = await self.writers_phase("latency")
        committed: dict[str, float] = wrote["committed"]
        warmup: dict[str, float] = wrote["warmup"]
        handled = await self.wait_all(set(committed) | set(warmup), within=120)
        lat = [(handled[k] - committed[k]) * 1000 for k in committed]
        warm = [(handled[k] - warmup[k]) * 1000 for k in warmup]
        return {
            "events": len(committed),
            "target_rate": self.args.rate,
            "offered_rate": wrote["offered_rate"],
            "writes_more_than_5ms_late": wrote["late"],
            **latency_figures(lat),
            "warmup": {"seconds": self.args.warmup, "events": len(warm), **(latency_figures(warm) if warm else {})},
            "writer_cpu_s": wrote["cpu_s"],
        }

    async def sustained(self) -> dict[str, Any]:
        wrote = await self.writers_phase("sustained")
        committed = set(wrote["ids"])
        first, written = wrote["first"], wrote["written"]
        handled = await self.wait_all(committed, within=300)
        last = max(handled.values())
        return {
            "events": len(committed),
            "events_per_transaction": wrote["per_tx"],
            "write_rate": round(len(committed) / (written - first), 1),
            "events_per_second": round(len(committed) / (last - first), 1),
            "drain_after_last_commit_s": round(last - written, 2),
            "writer_cpu_s": wrote["cpu_s"],
        }


class Writers:
    """The load generator (its own process): commits bench events the way the API's unit of work does."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    async def write(self, batch: int = 1) -> tuple[list[str], float]:
        """Commit ``batch`` events in one transaction; returns their ids and when the commit returned.

        Raw asyncpg with one prepared statement per connection: the writers are load generators,
        and through SQLAlchemy's ``UnitOfWork`` they cost more CPU than the path they measure. The
        rows are what ``UnitOfWork`` writes (see ``outbox_rows``), and the statement fires the same
        NOTIFY trigger. A single-statement transaction commits when the statement returns.
        """
        events = [Event(type=EVENT_TYPE, aggregate_id=f"agg-{i % 64}", data={"i": i}) for i in range(batch)]
        rows = outbox_rows(events)
        columns = [[r[c] for r in rows] for c in _COLUMNS[:-1]] + [[_json_text(r["data"]) for r in rows]]
        writer = await self.writers.get()
        _conn, insert = writer
        try:
            await insert.fetchval(*columns)  # one statement: its return is the commit's
            at = time.time()
        finally:
            self.writers.put_nowait(writer)
        return [str(e.id) for e in events], at

    async def open_writers(self) -> None:
        import asyncpg

        dsn = sa.engine.make_url(self.args.database_url).set(drivername="postgresql").render_as_string(False)
        # Each connection prepares the insert before the clock starts: left to its first write, the
        # 16 preparations fell into the first 100 ms of the latency phase, the writers then caught up
        # in a burst (167 commits in those 100 ms), and about 100 of the 10,000 events, 1 % and so the
        # whole p99, were the load generator's start-up rather than the backbone's.
        self.writers: asyncio.Queue[Any] = asyncio.Queue()
        for _ in range(self.args.writers):
            conn = await asyncpg.connect(dsn, timeout=10)
            self.writers.put_nowait((conn, await conn.prepare(_INSERT)))

    async def close_writers(self) -> dict[str, float]:
        """Close the connections; returns the CPU seconds their PostgreSQL backends used (same host)."""
        cpu = 0.0
        while not self.writers.empty():
            conn, _statement = self.writers.get_nowait()
            cpu += _proc_cpu(await conn.fetchval("SELECT pg_backend_pid()")) or 0.0
            await conn.close()
        return {"postgres_backends": round(cpu, 2)}

    async def latency(self) -> dict[str, Any]:
        """Open loop at ``--rate``, one event per transaction; commit times by event id, those of the
        first ``--warmup`` seconds apart."""
        rate, duration = self.args.rate, self.args.duration
        first_measured = int(rate * self.args.warmup)
        total = first_measured + int(rate * duration)
        committed: dict[str, float] = {}
        warmup: dict[str, float] = {}
        start = time.monotonic() + 0.2
        late = 0
        next_index = 0

        async def writer() -> None:
            nonlocal next_index, late
            while next_index < total:
                i = next_index
                next_index += 1
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.005 and i >= first_measured:
                    late += 1
                ids, at = await self.write()
                (committed if i >= first_measured else warmup)[ids[0]] = at

        await asyncio.gather(*(writer() for _ in range(self.args.writers)))
        offered = time.monotonic() - start
        return {"committed": committed, "warmup": warmup, "offered_rate": round(total / offered, 1), "late": late}

    async def sustained(self) -> dict[str, Any]:
        """As fast as the writers can, 10 events per transaction."""
        total, per_tx = self.args.sustained_events, 10
        committed: list[str] = []
        first = time.time()
        remaining = total // per_tx

        async def writer() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                ids, _ = await self.write(per_tx)
                committed.extend(ids)

        await asyncio.gather(*(writer() for _ in range(self.args.writers)))
        return {"ids": committed, "per_tx": per_tx, "first": first, "written": time.time()}

    async def run(self, phase: str) -> dict[str, Any]:
        await self.open_writers()
        cpu0 = time.process_time()
        result = await (self.latency() if phase == "latency" else self.sustained())
        result["cpu_s"] = {"writers": round(time.process_time() - cpu0, 2)}
        result["cpu_s"].update(await self.close_writers())
        return result


def _broker_pid() -> int | None:
    """The RabbitMQ broker's process (Erlang's beam.smp), if it runs on this host."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "beam.smp":
                    return int(entry.name)
            except OSError:
                continue
    return None


def _proc_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) a process used so far, from /proc (Linux); None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy.ext.asyncio import create_async_engine

    from skybook.platform.migrate import upgrade

    await reset_database(args.database_url, args.admin_url)
    await asyncio.to_thread(upgrade, args.database_url)
    engine = create_async_engine(args.database_url, pool_size=4)
    async with engine.begin() as conn:
        await conn.execute(CREATE_EFFECTS)
    holder, bootstrap = kafka_mock() if "kafka" in args.transports else (None, "")
    spinners = contend(args.contend)
    results: dict[str, Any] = {
        "load_average_before": os.getloadavg(),
        "cpus": os.cpu_count(),
        "relay": {
            "batch_size": args.relay_batch,
            "linger_ms": args.relay_linger_ms,
            "rabbitmq_events_per_message": args.events_per_message,
        },
        "contention": {"busy_fraction_of_each_core": args.contend, "spinners": len(spinners)},
        "note": "2 shared cores, other work running; the Kafka figures use librdkafka's in-memory mock "
        "cluster (no disk, no replication), RabbitMQ is a real broker on loopback with persistent messages "
        "and publisher confirms; PostgreSQL on loopback.",
    }
    try:
        for transport in args.transports:
            prefix = f"bench{uuid.uuid4().hex[:8]}"
            env = {k: v for k, v in os.environ.items() if not k.startswith("SKYBOOK_")}
            env.update(
                {
                    "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
                    "SKYBOOK_DATABASE_URL": args.database_url,
                    "SKYBOOK_DATABASE_POOL_SIZE": "10",
                    "SKYBOOK_BROKER_PREFIX": prefix,
                    "SKYBOOK_RELAY_BATCH_SIZE": str(args.relay_batch),
                    "SKYBOOK_RELAY_LINGER_MS": str(args.relay_linger_ms),
                    "SKYBOOK_RABBITMQ_EVENTS_PER_MESSAGE": str(args.events_per_message),
                    "SKYBOOK_WORKER_PREFETCH": str(args.prefetch),
                    "SKYBOOK_LOG_LEVEL": "INFO",
                    "SKYBOOK_DATA_DIR": args.log_dir,
                    "SKYBOOK_BENCH_PER_EVENT": "1" if args.per_event else "0",
                }
            )
            if transport == "kafka":
                env["SKYBOOK_KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
                # The mock cluster holds every fetch for the full fetch.wait.max.ms even when records
                # are there (a real broker answers at once), which would measure that setting only.
                # 2 ms, not 5: in three interleaved runs of each, p50 5.2-7.1 ms and p99 10.6-15.3 ms
                # against 8.0-8.9 and 18.0-21.9 ms, for about 0.07 ms more worker CPU per event.
                env["SKYBOOK_KAFKA_FETCH_WAIT_MAX_MS"] = str(args.kafka_fetch_wait_ms)
                env["SKYBOOK_EXTRA_CONSUMERS"] = "bench.events:stream_consumers"
            else:
                env["SKYBOOK_RABBITMQ_URL"] = args.rabbitmq_url
                env["SKYBOOK_EXTRA_CONSUMERS"] = "bench.events:tasks_consumers"
            async with engine.begin() as conn:
                # Each broker starts from empty event tables. Marking the previous broker's rows sent
                # instead left some 80,000 dead row versions, and their vacuum ran during the next
                # broker's phases: PostgreSQL CPU of relay and worker in the Kafka latency phase was
                # 0.58-0.59 ms per event after that UPDATE, 0.28 ms after this TRUNCATE.
                await conn.execute(sa.text("TRUNCATE outbox, inbox, bench_effects"))
            run = Run(args, engine, transport, env)
            run.mock = holder
            warm_writers = Writers(args)
            await warm_writers.open_writers()
            run.start("relay")
            run.start("worker")
            try:
                warm: set[str] = set()
                for _ in range(20):
                    ids, _at = await warm_writers.write(10)
                    warm.update(ids)
                await run.wait_all(warm, within=120)
                cpu0 = await run.cpu_seconds()
                latency = await run.latency()
                cpu1 = await run.cpu_seconds()
                sustained = await run.sustained()
                cpu2 = await run.cpu_seconds()
                for phase, before, after in ((latency, cpu0, cpu1), (sustained, cpu1, cpu2)):
                    cpu = {k: round(after[k] - before[k], 3) for k in after if k in before}
                    cpu.update({f"writer_{k}": v for k, v in phase.pop("writer_cpu_s").items()})
                    phase["cpu_s"] = cpu
                    # What each process spends per event: the figure that does not depend on how
                    # busy the (shared) machine was (the latency phase's CPU covers its warm-up too).
                    events = phase["events"] + phase.get("warmup", {}).get("events", 0)
                    phase["cpu_ms_per_event"] = {k: round(v * 1000 / events, 3) for k, v in cpu.items()}
                results[transport] = {"latency": latency, "sustained": sustained}
            finally:
                run.stop()
                await warm_writers.close_writers()
                if transport == "rabbitmq":
                    await delete_rabbit_objects(args.rabbitmq_url, prefix)
                async with engine.begin() as conn:
                    await conn.execute(sa.text("TRUNCATE bench_effects"))
    finally:
        for spinner in spinners:
            spinner.terminate()
            spinner.wait(timeout=10)
        await engine.dispose()
        if holder is not None:
            holder.terminate()
            holder.wait(timeout=10)
    results["load_average_after"] = os.getloadavg()
    return results


def contend(fraction: float) -> list[subprocess.Popen[bytes]]:
    """One busy loop per core, each spinning ``fraction`` of every 10 ms and sleeping the rest: a
    machine whose cores are partly taken by other work (0: none).

    Each also ends by itself when this process is gone, or after 15 minutes.
    """
    if fraction <= 0:
        return []
    argv = [sys.executable, __file__, "--spin", str(fraction)]
    return [subprocess.Popen(argv, stdin=subprocess.DEVNULL) for _ in range(os.cpu_count() or 1)]


def spin(fraction: float, seconds: float = 900.0) -> None:
    period, parent = 0.010, os.getppid()
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end and os.getppid() == parent:
        busy_until = now + fraction * period
        while time.monotonic() < busy_until:
            pass
        time.sleep(period - fraction * period)


async def delete_rabbit_objects(url: str, prefix: str) -> None:
    import aio_pika

    from skybook.bootstrap import bootstrap
    from skybook.platform.messaging import Names
    from skybook.platform.messaging.rabbitmq import delete_topology
    from skybook.settings import Settings

    container = bootstrap(Settings(_env_file=None, data_dir=Path("/tmp")))  # type: ignore[call-arg]
    consumers = container.consumers() + tasks_consumers()
    await container.engine.dispose()
    connection = await aio_pika.connect(url, timeout=10)
    try:
        await delete_topology(await connection.channel(), Names(prefix), consumers, max_attempts=10)
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="postgresql+asyncpg://root@127.0.0.1:5432/skybook_bench_events")
    parser.add_argument("--admin-url", default="postgresql://root@127.0.0.1:5432/root")
    parser.add_argument("--rabbitmq-url", default="amqp://guest:guest@127.0.0.1:5672/")  # pragma: allowlist secret
    parser.add_argument("--transports", nargs="+", default=["rabbitmq", "kafka"], choices=["rabbitmq", "kafka"])
    parser.add_argument("--rate", type=float, default=1000.0, help="Events/s of the latency phase.")
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds of the latency phase.")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="Seconds at --rate before the latency phase, reported apart."
    )
    parser.add_argument("--sustained-events", type=int, default=30000)
    parser.add_argument("--writers", type=int, default=16, help="Concurrent writer connections.")
    parser.add_argument("--prefetch", type=int, default=500)
    parser.add_argument("--relay-batch", type=int, default=500, help="SKYBOOK_RELAY_BATCH_SIZE of the relay.")
    parser.add_argument(
        "--relay-linger-ms",
        type=float,
        default=2.0,
        help="SKYBOOK_RELAY_LINGER_MS of the relay (0: a round per NOTIFY)",
    )
    parser.add_argument(
        "--events-per-message",
        type=int,
        default=100,
        help="SKYBOOK_RABBITMQ_EVENTS_PER_MESSAGE of the relay (1: one event per RabbitMQ message).",
    )
    parser.add_argument(
        "--kafka-fetch-wait-ms",
        type=int,
        default=2,
        help="Workers' fetch.wait.max.ms on the Kafka mock cluster (it holds every fetch that long).",
    )
    parser.add_argument("--log-dir", default="/tmp/skybook-bench-events")
    parser.add_argument(
        "--profile", action="store_true", help="Run relay and worker under cProfile (.prof in --log-dir)."
    )
    parser.add_argument(
        "--per-event", action="store_true", help="The bench consumer handles each event alone (no handle_many)."
    )
    parser.add_argument(
        "--contend",
        type=float,
        default=0.0,
        help="Fraction (0-0.9) of each core that busy loops take for the whole run, to see the figures on a "
        "machine whose cores are shared with other work (0: none).",
    )
    parser.add_argument("--writer-phase", choices=["latency", "sustained"], help=argparse.SUPPRESS)
    parser.add_argument("--spin", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.spin is not None:
        spin(args.spin)  # one of the busy loops of --contend (started by the bench itself)
        return
    if not 0 <= args.contend <= 0.9:
        parser.error("--contend is a fraction of a core between 0 and 0.9")
    if args.writer_phase:
        # The writer process (started by the bench itself): uvloop, so the load generator can
        # offer the target rate on a small machine.
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            print(json.dumps(runner.run(Writers(args).run(args.writer_phase))))
        return
    if args.per_event:
        os.environ["SKYBOOK_BENCH_PER_EVENT"] = "1"  # this process builds the consumers too (clean-up)
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    print(json.dumps(asyncio.run(bench(args)), indent=2))


if __name__ == "__main__":
    main()
