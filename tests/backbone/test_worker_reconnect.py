"""A worker whose RabbitMQ connection drops reconnects by itself and loses nothing (real broker).

The worker runs in this process and reaches the broker through a loopback TCP proxy, so the test
can cut its connection the way a broker restart or a network fault does, at a moment it chooses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest
import sqlalchemy as sa

from skybook.bootstrap import Container
from skybook.platform.dispatcher import Consumer
from skybook.platform.events import Event
from skybook.platform.messaging import Names
from skybook.platform.messaging.rabbitmq import RabbitPublisher
from skybook.platform.messaging.worker import Worker, WorkerOptions
from skybook.platform.outbox import inbox
from skybook.platform.uow import UnitOfWork
from tests.backbone.conftest import delete_queues


class LoopbackProxy:
    """Forwards 127.0.0.1:<port> to a target; ``cut()`` aborts every connection made so far."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._transports: list[asyncio.WriteTransport] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0

    async def __aenter__(self) -> LoopbackProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        self._server.close()
        self.cut()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream_r, upstream_w = await asyncio.open_connection(*self._target)
        self.connections += 1
        self._transports += [client_w.transport, upstream_w.transport]
        for reader, writer in ((client_r, upstream_w), (upstream_r, client_w)):
            task = asyncio.create_task(_pipe(reader, writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def cut(self) -> None:
        for transport in self._transports:
            transport.abort()
        self._transports.clear()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()


class Seen:
    """The ``n`` of every event the probe consumer handled, and a way to wait for a count."""

    def __init__(self) -> None:
        self.numbers: list[int] = []
        self._changed = asyncio.Condition()

    async def add(self, n: int) -> None:
        async with self._changed:
            self.numbers.append(n)
            self._changed.notify_all()

    async def reach(self, count: int, within: float = 20.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.numbers) >= count), within)


@pytest.fixture
async def probe(rabbitmq: str, prefix: str) -> AsyncIterator[tuple[Consumer, Seen]]:
    """A task consumer that records the ``n`` of each event it handles; its queues go afterwards."""
    seen = Seen()

    async def handle(event: Event, uow: UnitOfWork) -> None:
        await seen.add(event.data["n"])

    consumer = Consumer("reconnect-probe", frozenset({"probe.tick"}), handle, transport="tasks")
    yield consumer, seen
    await delete_queues(rabbitmq, prefix, [consumer], max_attempts=5)


async def test_a_worker_whose_broker_connection_drops_reconnects_and_handles_every_later_event_once(
    container: Container, rabbitmq: str, prefix: str, probe: tuple[Consumer, Seen]
) -> None:
    consumer, seen = probe
    names = Names(prefix)
    broker = urlsplit(rabbitmq)
    publisher = RabbitPublisher(rabbitmq, names, [consumer])
    async with LoopbackProxy(broker.hostname or "127.0.0.1", broker.port or 5672) as proxy:
        via_proxy = urlunsplit(broker._replace(netloc=f"{broker.netloc.rsplit('@', 1)[0]}@127.0.0.1:{proxy.port}"))
        worker = Worker(
            [consumer],
            container.consumer_uow,
            container.clock,
            names,
            WorkerOptions(prefetch=10, retry_base_delay=0.1),
            rabbitmq_url=via_proxy,
            kafka_bootstrap_servers=None,
        )
        running = asyncio.create_task(worker.run())
        try:
            events = [Event(type="probe.tick", aggregate_id="p", data={"n": n}) for n in range(10)]
            assert await publisher.publish(events[:5]) == 5
            await seen.reach(5)
            await _committed(container, consumer.name, 5)
            await asyncio.sleep(0.3)  # its ack follows the commit: the worker now waits, idle

            proxy.cut()  # the broker "goes away" under the worker
            assert await publisher.publish(events[5:]) == 5
            await seen.reach(10)
            assert proxy.connections == 2  # it came back by itself
        finally:
            worker.stop()
            await asyncio.wait_for(running, timeout=20)
            await publisher.close()
    assert sorted(seen.numbers) == list(range(10))  # every event once: none lost, none handled twice
    assert await _claimed(container, consumer.name) == 10


async def _claimed(container: Container, consumer: str) -> int:
    """How many events ``consumer`` has committed in the inbox."""
    async with container.engine.connect() as conn:
        count = await conn.scalar(sa.select(sa.func.count()).select_from(inbox).where(inbox.c.consumer == consumer))
    return int(count or 0)


async def _committed(container: Container, consumer: str, count: int) -> None:
    """Wait (up to 10 s) until ``consumer`` has committed ``count`` events."""
    for _ in range(200):
        if await _claimed(container, consumer) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{consumer} committed {await _claimed(container, consumer)} of {count} events")
