"""Fixtures of the event backbone tests: Kafka (librdkafka mock cluster), RabbitMQ, processes."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from skybook.platform.dispatcher import Consumer
from skybook.platform.events import Event
from skybook.platform.uow import UnitOfWork
from tests.backbone import recorder
from tests.conftest import Database, _unavailable

RABBITMQ_URL = os.environ.get(
    "SKYBOOK_TEST_RABBITMQ_URL",
    "amqp://guest:guest@127.0.0.1:5672/",  # pragma: allowlist secret
)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A librdkafka mock cluster (in memory, in this process); its address comes from the client log.

    The holding producer keeps the cluster alive for the session; relay and worker subprocesses
    connect to it over loopback like to a real broker.
    """
    import confluent_kafka

    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("tests.kafka-mock")
    logger.addHandler(Capture())
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    holder = confluent_kafka.Producer({"test.mock.num.brokers": 1, "logger": logger, "debug": "mock"})
    deadline = time.monotonic() + 10
    bootstrap = None
    while bootstrap is None and time.monotonic() < deadline:
        holder.poll(0.1)
        for line in lines:
            if m := re.search(r"Mock cluster enabled.*replaced with (\S+)", line):
                bootstrap = m.group(1)
    assert bootstrap, "the mock cluster did not report its address"
    yield bootstrap
    holder.flush(1)


@pytest.fixture
async def rabbitmq() -> str:
    import aio_pika

    try:
        connection = await aio_pika.connect(RABBITMQ_URL, timeout=5)
        await connection.close()
    except Exception as err:
        _unavailable("RabbitMQ", err)
    return RABBITMQ_URL


@pytest.fixture
async def prefix(rabbitmq: str) -> AsyncIterator[str]:
    """A broker prefix of this test alone; its exchange and queues are deleted afterwards."""
    from skybook.bootstrap import bootstrap
    from skybook.settings import Settings

    name = f"bbt{uuid.uuid4().hex[:10]}"
    yield name
    container = bootstrap(Settings(_env_file=None, data_dir=Path(tempfile.gettempdir())))  # type: ignore[call-arg]
    consumers = container.consumers() + recorder.consumers()
    await container.close()
    await delete_queues(rabbitmq, name, consumers, max_attempts=10)


async def delete_queues(rabbitmq: str, prefix: str, consumers: Sequence[Consumer], *, max_attempts: int) -> None:
    """Delete the exchange under ``prefix`` and these task consumers' queues, retry queues included."""
    import aio_pika

    from skybook.platform.messaging import Names
    from skybook.platform.messaging.rabbitmq import delete_topology

    connection = await aio_pika.connect(rabbitmq, timeout=5)
    try:
        await delete_topology(await connection.channel(), Names(prefix), consumers, max_attempts=max_attempts)
    finally:
        await connection.close()


@pytest.fixture
async def engine(postgres_database: Database) -> AsyncIterator[AsyncEngine]:
    eng = create_async_engine(postgres_database.url)
    async with eng.begin() as conn:
        for ddl in recorder.DDL:
            await conn.execute(sa.text(ddl))
        await conn.execute(sa.text("TRUNCATE outbox, inbox, dead_letters, backbone_effects, backbone_cured"))
    yield eng
    await eng.dispose()


@dataclass
class Processes:
    """Relay and worker subprocesses of one test (``python -m skybook.cli ...``), all killed at the end."""

    base_env: dict[str, str]
    logs: Path
    running: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self, **settings: Any) -> dict[str, str]:
        """This test's environment for a ``skybook`` process: the caller's ``SKYBOOK_*`` dropped, the
        base settings and ``settings`` (``name=value`` for ``SKYBOOK_NAME``) set."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKYBOOK_")}
        env.update(self.base_env)
        env.update({f"SKYBOOK_{k.upper()}": str(v) for k, v in settings.items()})
        return env

    def start(self, command: str, **settings: Any) -> subprocess.Popen[bytes]:
        env = self.env(**settings)
        # The process writes to its own copy of the log file; this one keeps no handle open.
        with (self.logs / f"{command}-{len(self.running)}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "skybook.cli", *command.split()],
                env=env,
                cwd=self.logs,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.running.append(proc)
        return proc

    def run(self, command: str, **settings: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "skybook.cli", *command.split()],
            env=self.env(**settings),
            cwd=self.logs,
            capture_output=True,
            text=True,
            timeout=60,
        )

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        """kill -9: no clean shutdown, no last acknowledgement or commit."""
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.running:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.running:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill(proc)

    def output(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.logs.glob("*.log")))


@pytest.fixture
def processes(
    postgres_database: Database, kafka_bootstrap: str, rabbitmq: str, prefix: str, tmp_path: Path
) -> Iterator[Processes]:
    procs = Processes(
        base_env={
            "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
            "SKYBOOK_ENVIRONMENT": "test",
            "SKYBOOK_SECRET_KEY": "test-only-secret-key-0123456789",  # pragma: allowlist secret
            "SKYBOOK_DATABASE_URL": postgres_database.url,
            "SKYBOOK_DATABASE_POOL_SIZE": "5",
            "SKYBOOK_DATA_DIR": str(tmp_path),
            "SKYBOOK_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "SKYBOOK_RABBITMQ_URL": rabbitmq,
            "SKYBOOK_BROKER_PREFIX": prefix,
            "SKYBOOK_EXTRA_CONSUMERS": "tests.backbone.recorder:consumers",
            "SKYBOOK_RELAY_POLL_INTERVAL_SECONDS": "0.5",
            "SKYBOOK_WORKER_RETRY_BASE_DELAY_SECONDS": "0.2",
            "SKYBOOK_WORKER_MAX_ATTEMPTS": "3",
        },
        logs=tmp_path,
    )
    yield procs
    procs.stop_all()


async def write_events(engine: AsyncEngine, specs: list[tuple[str, dict[str, Any]]]) -> list[Event]:
    """Commit one transaction per event through the real unit of work (outbox insert, NOTIFY trigger)."""
    events = []
    for aggregate, data in specs:
        event = Event(type=recorder.EVENT_TYPE, aggregate_id=aggregate, data=data)
        async with UnitOfWork(engine) as uow:
            uow.emit(event)
            await uow.commit()
        events.append(event)
    return events


def round_robin(count: int, aggregates: int, start: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """``count`` events spread over aggregates, each aggregate's ``seq`` increasing."""
    return [(f"agg-{i % aggregates}", {"seq": start + i}) for i in range(count)]


async def effects(engine: AsyncEngine, consumer: str) -> list[sa.Row[Any]]:
    async with engine.connect() as conn:
        return list(
            await conn.execute(
                sa.text("SELECT event_id, aggregate_id, seq FROM backbone_effects WHERE consumer = :c ORDER BY id"),
                {"c": consumer},
            )
        )


async def wait_for(engine: AsyncEngine, procs: Processes, expected: dict[str, int], *, within: float = 90.0) -> None:
    """Wait (bounded) until each consumer has at least the expected number of effects."""
    deadline = time.monotonic() + within
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = {c: len(await effects(engine, c)) for c in expected}
        if all(counts[c] >= n for c, n in expected.items()):
            return
        await asyncio.sleep(0.25)
    pytest.fail(f"effects {counts}, expected {expected}\n{procs.output()}")


def assert_exactly_once(rows: list[sa.Row[Any]], events: list[Event]) -> None:
    ids = [r.event_id for r in rows]
    assert sorted(ids) == sorted(str(e.id) for e in events), "every event has exactly one effect"


def assert_in_order_per_aggregate(rows: list[sa.Row[Any]]) -> None:
    last: dict[str, int] = {}
    for row in rows:
        assert row.seq > last.get(row.aggregate_id, -1), f"{row.aggregate_id}: {row.seq} after {last[row.aggregate_id]}"
        last[row.aggregate_id] = row.seq
