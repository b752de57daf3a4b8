"""Several events in one RabbitMQ message: what the relay's publisher writes and how a worker settles it.

The publisher and the worker talk to the real broker; the worker runs in this process on SQLite
and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from skybook.bootstrap import Container
from skybook.platform.dispatcher import Consumer
from skybook.platform.events import Event
from skybook.platform.messaging import EVENTS_HEADER, Names, decode_many, encode, encode_many
from skybook.platform.messaging.rabbitmq import RabbitPublisher, messages_of
from skybook.platform.messaging.worker import Worker, WorkerOptions
from skybook.platform.outbox import dead_letters, inbox
from skybook.platform.uow import UnitOfWork
from tests.backbone.conftest import delete_queues


def ev(kind: str, n: int, **extra: object) -> Event:
    return Event(type=kind, aggregate_id="a1", data={"n": n, **extra})


def test_consecutive_events_of_one_type_share_a_message_within_its_limits_and_in_order() -> None:
    big = ev("x.a", 9, blob="z" * 3000)
    events = [ev("x.a", 0), ev("x.a", 1), ev("x.a", 2), ev("x.a", 3), ev("x.b", 4), ev("x.a", 5), ev("x.a", 6), big]

    found = messages_of(events, most_events=3, most_bytes=2000)

    # A new message at a change of type, at three events, and before a body would pass 2,000 bytes
    # (an event larger than that alone still goes, alone).
    assert [[e.data["n"] for e in batch] for batch, _ in found] == [[0, 1, 2], [3], [4], [5, 6], [9]]
    for batch, body in found:
        assert decode_many(body) == batch
    assert found[1][1] == encode(events[3])  # one event keeps the single-envelope form
    assert found[-1][1] == encode(big)


def test_a_body_that_is_not_events_is_refused_whole() -> None:
    good = encode(ev("x.a", 1))
    assert decode_many(encode_many([good, good])) == decode_many(good) * 2
    for body in (b"[]", b"[" + good + b',{"type":"x"}]', b'"text"', b"42", b"[1]", b"{", b'{"id": "not-a-uuid"}'):
        with pytest.raises(ValueError, match="not an event envelope"):
            decode_many(body)


@pytest.fixture
async def queue_consumer(rabbitmq: str, prefix: str) -> AsyncIterator[Consumer]:
    """A task consumer of x.a and x.b that fails on events marked poison; its queues go afterwards."""

    async def handle(event: Event, uow: UnitOfWork) -> None:
        if event.data.get("poison"):
            raise RuntimeError("poison event")

    consumer = Consumer("batch-probe", frozenset({"x.a", "x.b"}), handle, transport="tasks")
    yield consumer
    await delete_queues(rabbitmq, prefix, [consumer], max_attempts=5)


async def test_the_publisher_sends_runs_of_one_type_as_one_message_each(
    rabbitmq: str, prefix: str, queue_consumer: Consumer
) -> None:
    import aio_pika

    names = Names(prefix)
    publisher = RabbitPublisher(rabbitmq, names, [queue_consumer], events_per_message=3)
    events = [ev("x.a", 0), ev("x.a", 1), ev("x.a", 2), ev("x.a", 3), ev("x.b", 4), ev("x.a", 5), ev("x.a", 6)]
    try:
        assert await publisher.publish(events) == 7  # confirmed events, not messages
    finally:
        await publisher.close()

    connection = await aio_pika.connect(rabbitmq, timeout=5)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(names.queue(queue_consumer.name))
        got: list[tuple[list[int], object, str | None]] = []
        while (msg := await queue.get(no_ack=True, fail=False, timeout=5)) is not None:
            carried = decode_many(msg.body)
            assert {e.type for e in carried} == {msg.type}  # routed by their one type
            got.append(([e.data["n"] for e in carried], msg.headers.get(EVENTS_HEADER), msg.message_id))
    finally:
        await connection.close()
    assert [(numbers, count) for numbers, count, _ in got] == [([0, 1, 2], 3), ([3], None), ([4], None), ([5, 6], 2)]
    assert [message_id for _, _, message_id in got] == [str(events[i].id) for i in (0, 3, 4, 5)]


async def test_a_poison_event_inside_a_message_is_retried_alone_and_the_others_are_handled_once(
    container: Container, rabbitmq: str, prefix: str, queue_consumer: Consumer
) -> None:
    names = Names(prefix)
    publisher = RabbitPublisher(rabbitmq, names, [queue_consumer])
    worker = Worker(
        [queue_consumer],
        container.consumer_uow,
        container.clock,
        names,
        WorkerOptions(prefetch=10, max_attempts=2, retry_base_delay=0.1),
        rabbitmq_url=rabbitmq,
        kafka_bootstrap_servers=None,
    )
    # Published before the worker starts: the six events wait in one message, the poison third.
    events = [ev("x.a", n, poison=n == 2) for n in range(6)]
    try:
        assert await publisher.publish(events) == 6
    finally:
        await publisher.close()
    running = asyncio.create_task(worker.run())
    try:
        letters = await _dead_letters(container, queue_consumer.name)
    finally:
        worker.stop()
        await asyncio.wait_for(running, timeout=20)

    assert [(row.event_id, row.attempts) for row in letters] == [(events[2].id, 2)]
    assert "poison event" in letters[0].error
    async with container.engine.connect() as conn:
        claimed = await conn.scalars(sa.select(inbox.c.event_id).where(inbox.c.consumer == queue_consumer.name))
        assert sorted(map(str, claimed)) == sorted(str(e.id) for i, e in enumerate(events) if i != 2)


async def _dead_letters(container: Container, consumer: str) -> list[sa.Row[object]]:
    """Wait (up to 20 s) for a dead letter of ``consumer``; its rows."""
    for _ in range(400):
        async with container.engine.connect() as conn:
            rows = list(await conn.execute(sa.select(dead_letters).where(dead_letters.c.consumer == consumer)))
        if rows:
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing dead-lettered for {consumer}")
