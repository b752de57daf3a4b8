"""Prometheus metrics of the relay and the workers (default registry; served when a port is set)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

OUTBOX_BACKLOG = Gauge("skybook_outbox_backlog", "Outbox events not yet confirmed by a broker.", ["destination"])
RELAY_PUBLISHED = Counter(
    "skybook_relay_published_total", "Events the relay published and the broker confirmed.", ["destination"]
)
RELAY_FAILURES = Counter(
    "skybook_relay_publish_failures_total", "Publish rounds that failed (broker down or refusing).", ["destination"]
)
RELAY_LEADER = Gauge("skybook_relay_leader", "1 while this relay holds the leader lock.")
WORKER_HANDLED = Counter(
    "skybook_worker_messages_total",
    "Messages a worker finished, by outcome (handled, duplicate, retried, dead_lettered).",
    ["consumer", "outcome"],
)
WORKER_BATCH = Histogram(
    "skybook_worker_batch_seconds",
    "Time to handle one batch of messages in one transaction.",
    ["consumer"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


def serve_metrics(port: int, addr: str) -> None:
    """Serve the metrics over HTTP on ``addr:port``; port 0 means off."""
    if port:
        start_http_server(port, addr=addr)
