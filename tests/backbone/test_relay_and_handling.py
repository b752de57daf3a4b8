"""Relay and handling rules without brokers (fake publishers), on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

import pytest
import sqlalchemy as sa

from skybook.bootstrap import Container
from skybook.platform.clock import FakeClock
from skybook.platform.dispatcher import Consumer
from skybook.platform.events import Event
from skybook.platform.messaging import PublishFailed, decode, encode
from skybook.platform.messaging.relay import Relay, RelayOptions
from skybook.platform.messaging.worker import Handling
from skybook.platform.outbox import inbox, outbox
from skybook.platform.uow import UnitOfWork


class FakePublisher:
    """Confirms the first ``confirm`` events of each batch (all when None); records what it saw."""

    def __init__(self, destination: str, *, types: frozenset[str] | None = None, confirm: int | None = None) -> None:
        self.destination = destination
        self.types = types
        self.confirm = confirm
        self.published: list[Event] = []

    def wants(self, event_type: str) -> bool:
        return self.types is None or event_type in self.types

    async def publish(self, events: Sequence[Event]) -> int:
        n = len(events) if self.confirm is None else min(self.confirm, len(events))
        self.published.extend(events[:n])
        return n

    async def close(self) -> None:
        pass


async def emit(container: Container, *events: Event) -> None:
    async with container.uow() as uow:
        uow.emit(*events)
        await uow.commit()


async def pending(container: Container, column: str) -> list[str]:
    async with container.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(outbox.c.type).where(outbox.c[column].is_(None)).order_by(outbox.c.position)
        )
        return [r.type for r in rows]


def ev(kind: str, n: int) -> Event:
    return Event(type=kind, aggregate_id="a1", data={"n": n})


async def test_a_row_is_marked_only_after_its_broker_confirmed_and_never_past_a_failure(container: Container) -> None:
    await emit(container, *(ev("order.confirmed", n) for n in range(5)))
    stream = FakePublisher("stream", confirm=2)
    tasks = FakePublisher("tasks")
    relay = Relay(container.engine, container.clock, [stream, tasks], RelayOptions(batch_size=100))

    with pytest.raises(PublishFailed):
        await relay.publish_batch(stream)
    # Two confirmed, the third failed: rows 3-5 stay pending for Kafka even though the broker
    # might take 4 and 5 next time, so nothing overtakes event 3. RabbitMQ is tracked apart.
    assert len(await pending(container, "stream_sent_at")) == 3
    assert len(await pending(container, "tasks_sent_at")) == 5

    stream.confirm = None
    published_before = _sample("skybook_relay_published_total", destination="stream")
    assert await relay.publish_batch(stream) == 3
    assert [e.data["n"] for e in stream.published] == [0, 1, 2, 3, 4]
    assert await pending(container, "stream_sent_at") == []

    # The operator sees it: published counter and per-broker backlog gauges (Prometheus default registry).
    assert await relay.publish_batch(stream) == 0  # the next (idle) round
    assert _sample("skybook_relay_published_total", destination="stream") == published_before + 3
    assert _sample("skybook_outbox_backlog", destination="stream") == 0
    assert _sample("skybook_outbox_backlog", destination="tasks") == 5


def _sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_events_no_task_consumer_wants_are_marked_without_publishing(container: Container) -> None:
    await emit(container, ev("inventory.changed", 1), ev("order.ticketed", 2), ev("hold.created", 3))
    tasks = FakePublisher("tasks", types=frozenset({"order.ticketed"}))
    relay = Relay(container.engine, container.clock, [tasks], RelayOptions(batch_size=100))

    assert await relay.publish_batch(tasks) == 3
    assert [e.type for e in tasks.published] == ["order.ticketed"]
    assert await pending(container, "tasks_sent_at") == []
    assert len(await pending(container, "stream_sent_at")) == 3  # Kafka has not seen them yet


async def test_a_failing_message_in_a_batch_does_not_undo_the_others_and_redelivery_has_no_effect(
    container: Container,
) -> None:
    effects: list[int] = []

    async def handle(event: Event, uow: UnitOfWork) -> None:
        if event.data.get("poison"):
            raise RuntimeError("bad")
        effects.append(event.data["n"])

    handling = Handling(Consumer("c1", frozenset({"x.y"}), handle), container.consumer_uow, container.clock)
    batch = [Event(type="x.y", aggregate_id="a", data={"n": n, "poison": n == 2}) for n in range(4)]

    errors = await handling.batch(batch)
    assert [e is None for e in errors] == [True, True, False, True]
    effects.clear()  # the failed one-transaction attempt ran 0 and 1 before rolling back
    assert await handling.batch([batch[0], batch[1], batch[3]]) == [None, None, None]
    assert effects == []  # redelivered: the inbox says they were handled already
    async with container.engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(inbox)) == 3


def test_the_wire_envelope_round_trips() -> None:
    event = Event(type="order.confirmed", aggregate_id="o1", data={"a": [1, 2]}, tenant_id="t1", correlation_id="r")
    assert decode(encode(event)) == event
    with pytest.raises(ValueError, match="not an event envelope"):
        decode(b'{"type": "x"}')


def test_a_time_without_offset_on_the_wire_is_read_as_utc() -> None:
    event = Event(type="order.confirmed", aggregate_id="o1", data={})
    naive = encode(event).replace(b"+00:00", b"")
    assert b"+00:00" not in naive
    assert decode(naive).occurred_at == event.occurred_at  # an aware datetime, comparable with the clock


async def test_each_first_handling_records_its_propagation_once(container: Container, clock: FakeClock) -> None:
    def observed(consumer: str) -> tuple[float, float]:
        return (
            _sample("skybook_event_propagation_seconds_count", consumer=consumer),
            _sample("skybook_event_propagation_seconds_sum", consumer=consumer),
        )

    async def handle(event: Event, uow: UnitOfWork) -> None:
        if event.data.get("poison"):
            raise RuntimeError("bad")

    name = f"c-{uuid.uuid4().hex[:8]}"
    handling = Handling(Consumer(name, frozenset({"x.y"}), handle), container.consumer_uow, container.clock)
    occurred = clock.now()
    batch = [Event(type="x.y", aggregate_id="a", occurred_at=occurred, data={"n": n}) for n in range(3)]
    clock.advance(timedelta(milliseconds=250))

    assert await handling.batch(batch) == [None, None, None]
    assert observed(name) == (3, pytest.approx(0.75))
    clock.advance(timedelta(seconds=5))

    def new() -> Event:
        return Event(type="x.y", aggregate_id="a", occurred_at=occurred, data={})

    # Redeliveries have no second effect and are no second propagation: only the new one counts.
    assert await handling.batch([batch[0], batch[1], new()]) == [None, None, None]
    assert observed(name) == (4, pytest.approx(0.75 + 5.25))
    # Nor on the one-by-one path after a failed batch; and a failed event has none.
    poison = Event(type="x.y", aggregate_id="a", occurred_at=occurred, data={"poison": True})
    errors = await handling.batch([batch[2], poison])
    assert [e is None for e in errors] == [True, False]
    assert observed(name) == (4, pytest.approx(6.0))
    assert await handling.attempt(new()) is None  # one alone counts as well
    assert observed(name) == (5, pytest.approx(6.0 + 5.25))


async def test_the_embedded_dispatcher_delivers_a_batch_around_a_poison_event(container: Container) -> None:
    effects: list[int] = []

    async def handle(event: Event, uow: UnitOfWork) -> None:
        if event.data.get("poison"):
            raise RuntimeError("bad")
        effects.append(event.data["n"])

    dispatcher = container.dispatcher
    dispatcher.consumers = [Consumer("c1", frozenset({"x.y"}), handle)]
    await emit(container, *[Event(type="x.y", aggregate_id="a", data={"n": n, "poison": n == 2}) for n in range(4)])

    await dispatcher.drain()
    # The one-transaction attempt ran 0 and 1 before rolling back; then each event went alone.
    assert set(effects) == {0, 1, 3}
    async with container.engine.connect() as conn:
        rows = (await conn.execute(sa.select(outbox).order_by(outbox.c.position))).all()
        assert await conn.scalar(sa.select(sa.func.count()).select_from(inbox)) == 3
    assert [r.dispatched_at is not None for r in rows] == [True, True, False, True]
    assert rows[2].attempts == 1 and "RuntimeError: bad" in rows[2].last_error

    effects.clear()
    await dispatcher.drain()  # only the poison event is looked at again; nothing runs twice
    assert effects == []
    async with container.engine.connect() as conn:
        assert await conn.scalar(sa.select(outbox.c.attempts).where(outbox.c.position == rows[2].position)) == 2


async def test_the_embedded_dispatcher_records_each_first_handling_once(container: Container, clock: FakeClock) -> None:
    async def handle(event: Event, uow: UnitOfWork) -> None:
        if event.data.get("poison"):
            raise RuntimeError("bad")

    name = f"c-{uuid.uuid4().hex[:8]}"
    container.dispatcher.consumers = [Consumer(name, frozenset({"x.y"}), handle)]
    count, total = "skybook_event_propagation_seconds_count", "skybook_event_propagation_seconds_sum"
    await emit(container, *[Event(type="x.y", aggregate_id="a", occurred_at=clock.now(), data={}) for _ in range(2)])
    clock.advance(timedelta(milliseconds=100))

    await container.dispatcher.drain()
    assert (_sample(count, consumer=name), _sample(total, consumer=name)) == (2, pytest.approx(0.2))

    async def lose_the_marks() -> None:  # as a crash after the effects and before the marks would
        async with container.engine.begin() as conn:
            await conn.execute(sa.update(outbox).values(dispatched_at=None))

    # Both delivered again: redeliveries, in one transaction, then one by one beside a poison event
    # that fails the batch (and itself). None of them counts.
    await lose_the_marks()
    await container.dispatcher.drain()
    await lose_the_marks()
    await emit(container, Event(type="x.y", aggregate_id="a", occurred_at=clock.now(), data={"poison": True}))
    await container.dispatcher.drain()
    assert (_sample(count, consumer=name), _sample(total, consumer=name)) == (2, pytest.approx(0.2))
    await emit(container, Event(type="x.y", aggregate_id="a", occurred_at=clock.now(), data={}))
    clock.advance(timedelta(milliseconds=300))
    await container.dispatcher.drain()
    assert (_sample(count, consumer=name), _sample(total, consumer=name)) == (3, pytest.approx(0.5))


async def test_a_batch_consumer_gets_only_new_events_in_order_and_a_poison_batch_falls_back_to_one_by_one(
    container: Container,
) -> None:
    batches: list[list[int]] = []
    singles: list[int] = []

    async def handle(event: Event, uow: UnitOfWork) -> None:
        if event.data.get("poison"):
            raise RuntimeError("bad")
        singles.append(event.data["n"])

    async def handle_many(events: Sequence[Event], uow: UnitOfWork) -> None:
        if any(e.data.get("poison") for e in events):
            raise RuntimeError("bad")
        batches.append([e.data["n"] for e in events])

    consumer = Consumer("c1", frozenset({"x.y"}), handle, handle_many=handle_many)
    handling = Handling(consumer, container.consumer_uow, container.clock)
    first = [Event(type="x.y", aggregate_id="a", data={"n": n}) for n in range(3)]

    assert await handling.batch(first) == [None, None, None]
    assert batches == [[0, 1, 2]] and singles == []

    # A redelivery of two of them with two new ones (one twice): only the new ones, once, in order.
    later = [Event(type="x.y", aggregate_id="a", data={"n": n}) for n in (3, 4)]
    assert await handling.batch([first[1], later[0], first[2], later[1], later[0]]) == [None] * 5
    assert batches == [[0, 1, 2], [3, 4]]

    # A poison event fails the batch call; every event is then handled alone through ``handle``.
    poison = [Event(type="x.y", aggregate_id="a", data={"n": n, "poison": n == 6}) for n in (5, 6, 7)]
    errors = await handling.batch(poison)
    assert [e is None for e in errors] == [True, False, True]
    assert singles == [5, 7]
    async with container.engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(inbox)) == 7
