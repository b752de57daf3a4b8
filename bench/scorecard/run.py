"""The scorecard: load a running cluster (``make cluster``) with Locust, drain, audit, publish.

    python bench/scorecard/run.py --host http://127.0.0.1:8080 --duration 60s --users 40

Reads the cluster's settings from ``var/cluster/cluster.env`` (database, brokers), scrapes each
API process's ``/metrics`` before and after, runs ``bench/scorecard/locustfile.py`` headless for
the given time, waits until every event is delivered and handled (the drain), runs the
consistency audit over the whole database, and writes ``docs/scorecard.json`` and
``docs/scorecard.md`` (each metric with its definition and the published claim).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

# The published case (arXiv 2410.24174) and Skybook's targets on this machine (issue 5).
CLAIMS = {
    "consistency": ("99.5 %", "100 %"),
    "propagation_p99_ms": ("< 75 ms", "< 15 ms at 1,000 events/s"),
    "events_per_second": ("1,050 events/s", ">= 3,150 events/s"),
    "cache_hit_ratio": ("92 %", ">= 95 %"),
    "error_rate": ("0.2 %", "0.0 %"),
}


def _load_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                env[k] = v
    return env


def scrape(ports: list[int]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Sum of every sample over the API processes' /metrics, keyed by name and labels."""
    from prometheus_client.parser import text_string_to_metric_families

    total: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            continue
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                total[key] = total.get(key, 0.0) + s.value
    return total


def cache_ratio(before: dict[Any, float], after: dict[Any, float]) -> dict[str, Any]:
    hits = misses = 0.0
    for (name, labels), value in after.items():
        if name != "skybook_cache_requests_total":
            continue
        delta = value - before.get((name, labels), 0.0)
        result = dict(labels).get("result")
        if result == "hit":
            hits += delta
        elif result in ("miss", "error"):
            misses += delta
    looked = hits + misses
    return {"hits": hits, "misses": misses, "ratio": hits / looked if looked else None}


def locust_totals(prefix: Path) -> dict[str, Any]:
    with (prefix.parent / f"{prefix.name}_stats.csv").open() as f:
        rows = list(csv.DictReader(f))
    by_name = {r["Name"]: r for r in rows}
    agg = by_name["Aggregated"]
    return {
        "requests": int(agg["Request Count"]),
        "failures": int(agg["Failure Count"]),
        "rps": float(agg["Requests/s"]),
        "p50_ms": float(agg["50%"] or 0),
        "p99_ms": float(agg["99%"] or 0),
        "by_name": {
            n: {
                "requests": int(r["Request Count"]),
                "failures": int(r["Failure Count"]),
                "p99_ms": float(r["99%"] or 0),
            }
            for n, r in by_name.items()
            if n != "Aggregated"
        },
    }


async def database_figures(started: datetime, ended: datetime, drain_timeout: float) -> dict[str, Any]:
    """Drain, then throughput, propagation latency and the audit, from the database."""
    import sqlalchemy as sa

    from skybook.booking.tables import orders
    from skybook.bootstrap import bootstrap
    from skybook.ops.audit import (
        Subscription,
        consumer_effects_once,
        markers_for,
        outbox_delivered,
        report,
        run_audit,
    )
    from skybook.platform.messaging import load_consumers
    from skybook.platform.outbox import inbox, outbox
    from skybook.settings import Settings

    settings = Settings()
    container = bootstrap(settings)
    subs = [
        Subscription(c.name, c.event_types) for c in container.consumers() + load_consumers(settings.extra_consumers)
    ]
    markers = markers_for(
        kafka=bool(settings.kafka_bootstrap_servers),
        rabbitmq=bool(settings.rabbitmq_url),
    )
    try:
        drain_start = time.monotonic()
        drained = False
        while time.monotonic() - drain_start < drain_timeout:
            async with container.engine.connect() as conn:
                delivered = await outbox_delivered(conn, markers)
                handled = await consumer_effects_once(conn, subs, markers)
            if delivered.passed and handled.passed:
                drained = True
                break
            await asyncio.sleep(1)
        drain_seconds = time.monotonic() - drain_start
        audit = report(await run_audit(container.engine, subs, markers))
        seconds = (ended - started).total_seconds()
        async with container.engine.connect() as conn:
            o, i = outbox.c, inbox.c
            events = await conn.scalar(
                sa.select(sa.func.count()).where(o.occurred_at >= started, o.occurred_at < ended)
            )
            rows = await conn.execute(
                sa.select(o.occurred_at, i.handled_at)
                .join(inbox, i.event_id == o.event_id)
                .where(o.occurred_at >= started, o.occurred_at < ended)
            )
            delays = sorted((r.handled_at - r.occurred_at).total_seconds() * 1000 for r in rows)
            handled_in_window = await conn.scalar(
                sa.select(sa.func.count()).select_from(inbox).where(i.handled_at >= started, i.handled_at < ended)
            )
            ticketed = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(orders)
                .where(orders.c.ticketed_at >= started, orders.c.ticketed_at < ended)
            )

        def pct(p: float) -> float | None:
            return round(delays[min(len(delays) - 1, int(p * len(delays)))], 2) if delays else None

        return {
            "drained": drained,
            "drain_seconds": round(drain_seconds, 2),
            "events": int(events or 0),
            "events_per_second": round((events or 0) / seconds, 1),
            "consumer_deliveries": int(handled_in_window or 0),
            "consumer_deliveries_per_second": round((handled_in_window or 0) / seconds, 1),
            "bookings": int(ticketed or 0),
            "bookings_per_second": round((ticketed or 0) / seconds, 2),
            "propagation_ms": {"count": len(delays), "p50": pct(0.5), "p95": pct(0.95), "p99": pct(0.99)},
            "audit": audit,
        }
    finally:
        await container.engine.dispose()


def write_markdown(path: Path, doc: dict[str, Any]) -> None:
    r = doc["results"]
    prop = r["propagation_ms"]
    audit = r["audit"]
    pct = lambda v: "n/a" if v is None else f"{v * 100:.2f} %"  # noqa: E731
    lines = [
        "# Skybook scorecard",
        "",
        f"Run of {doc['started_at']} for {doc['duration_seconds']:.0f} s: {doc['users']} Locust users against "
        f"`{doc['host']}` (nginx in front of the API processes; events {doc['backbone']}). "
        "Produced by `make scorecard` (bench/scorecard/run.py); raw figures in `docs/scorecard.json`.",
        "",
        "| metric | Skybook | published claim | target | definition |",
        "|---|---|---|---|---|",
        f"| consistency | {pct(audit['consistency'])} ({audit['passed']}/{audit['total']} checks) | "
        f"{CLAIMS['consistency'][0]} | {CLAIMS['consistency'][1]} | share of the audit's checks that hold over the "
        "whole database after the run and a drain (`skybook audit`) |",
        f"| propagation p50 / p95 / p99 | {prop['p50']} / {prop['p95']} / {prop['p99']} ms | "
        f"{CLAIMS['propagation_p99_ms'][0]} | {CLAIMS['propagation_p99_ms'][1]} | from an event's creation in the "
        "committing transaction (`outbox.occurred_at`) to a consumer recording it handled in the same transaction "
        "as its effect (`inbox.handled_at`), over every consumer delivery of the run |",
        f"| events/s | {r['events_per_second']} | {CLAIMS['events_per_second'][0]} | {CLAIMS['events_per_second'][1]} "
        "| domain events committed to the outbox per second of load (all of them are delivered: see the drain) |",
        f"| consumer deliveries/s | {r['consumer_deliveries_per_second']} | | | events handled by a consumer "
        "(inbox rows) per second |",
        f"| bookings/s | {r['bookings_per_second']} | | | orders ticketed (paid, e-tickets issued) per second |",
        f"| cache hit ratio (searches) | {pct(r['cache']['ratio'])} | {CLAIMS['cache_hit_ratio'][0]} | "
        f"{CLAIMS['cache_hit_ratio'][1]} | search cache hits / (hits + misses + backend errors), from the API "
        "processes' `skybook_cache_requests_total` |",
        f"| error rate | {pct(r['error_rate'])} | {CLAIMS['error_rate'][0]} | {CLAIMS['error_rate'][1]} | "
        "5xx answers and transport errors / all requests; 4xx the API is meant to answer (sold_out, declined "
        "card, ...) are listed apart below |",
        "",
        f"Requests: {r['requests']} ({r['rps']:.0f}/s), unexpected 4xx: {r['unexpected_4xx']}, "
        f"drain after the load: {r['drain_seconds']} s ({'complete' if r['drained'] else 'INCOMPLETE'}).",
        "",
        "Expected 4xx answers by request and code:",
        "",
    ]
    lines += [f"* {k}: {v}" for k, v in sorted(r["expected_4xx"].items())] or ["* none"]
    lines += ["", "Audit checks:", ""]
    for c in audit["checks"]:
        status = "pass" if c["passed"] else f"**FAIL** ({c['failure_count']} rows)"
        lines.append(f"* `{c['name']}` — {status}, {c['checked']} checked: {c['description']}")
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="http://127.0.0.1:8080")
    parser.add_argument("--duration", default="60s", help="Locust run time (e.g. 60s, 5m).")
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--spawn-rate", type=float, default=10)
    parser.add_argument("--api-ports", default="8001,8002", help="API processes to scrape /metrics from.")
    parser.add_argument("--cluster-env", type=Path, default=ROOT / "var/cluster/cluster.env")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "var/scorecard")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--drain-timeout", type=float, default=120)
    args = parser.parse_args()

    cluster_env = _load_env(args.cluster_env)
    os.environ.update({k: v for k, v in cluster_env.items() if k.startswith("SKYBOOK_") and k != "SKYBOOK_BACKBONE"})
    ports = [int(p) for p in args.api_ports.split(",") if p]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    extra = args.out_dir / "locust-extra.json"
    prefix = args.out_dir / "locust"

    before = scrape(ports)
    started = datetime.now(UTC)
    locust = subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(ROOT / "bench/scorecard/locustfile.py"),
            "--headless",
            "--host",
            args.host,
            "--users",
            str(args.users),
            "--spawn-rate",
            str(args.spawn_rate),
            "--run-time",
            args.duration,
            "--csv",
            str(prefix),
            "--only-summary",
            "--exit-code-on-error",
            "0",
        ],
        env={**os.environ, "SCORECARD_RESULT": str(extra)},
        check=False,
    )
    ended = datetime.now(UTC)
    after = scrape(ports)
    if locust.returncode != 0:
        print(f"locust exited with {locust.returncode}", file=sys.stderr)
        return 1

    totals = locust_totals(prefix)
    tallies = json.loads(extra.read_text())
    # Keys are "kind|request status code": kind is errors (5xx, transport) or unexpected_4xx.
    server_or_transport = sum(v for k, v in tallies["unexpected"].items() if k.startswith("errors|"))
    unexpected_4xx = sum(v for k, v in tallies["unexpected"].items() if k.startswith("unexpected_4xx|"))
    figures = asyncio.run(database_figures(started, ended, args.drain_timeout))
    results = {
        **figures,
        "requests": totals["requests"],
        "rps": totals["rps"],
        "failures": totals["failures"],
        "server_or_transport_errors": server_or_transport,
        "unexpected_4xx": unexpected_4xx,
        "error_rate": server_or_transport / totals["requests"] if totals["requests"] else None,
        "expected_4xx": tallies["expected_4xx"],
        "unexpected": tallies["unexpected"],
        "business": tallies["business"],
        "cache": cache_ratio(before, after),
        "latency_ms": {"p50": totals["p50_ms"], "p99": totals["p99_ms"], "by_request": totals["by_name"]},
    }
    doc = {
        "started_at": started.isoformat(),
        "duration_seconds": (ended - started).total_seconds(),
        "host": args.host,
        "users": args.users,
        "backbone": "through relay, Kafka/RabbitMQ and workers"
        if cluster_env.get("SKYBOOK_BACKBONE") == "1"
        else "delivered in-process by the API processes",
        "mix": {k: tallies[k] for k in ("tenants", "api_keys", "zipf_s", "routes", "days")},
        "results": results,
    }
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "scorecard.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    write_markdown(args.docs / "scorecard.md", doc)
    print(json.dumps({k: results[k] for k in ("events_per_second", "bookings_per_second", "error_rate")}))
    print(f"consistency {results['audit']['consistency']:.2%}; wrote docs/scorecard.md and docs/scorecard.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
