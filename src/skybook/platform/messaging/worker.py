"""``skybook worker``: runs every consumer from the brokers, effects exactly once through the inbox.

A ``tasks`` consumer reads its RabbitMQ queue, a ``stream`` consumer its Kafka consumer group.
A RabbitMQ message carries one event or an array of them (``RabbitPublisher``). Messages that
arrived together are handled in one transaction (claim in the inbox, effect,
commit) and acknowledged after the commit, so a worker killed mid-batch leaves them to be
redelivered and the inbox drops what was already done. When a batch fails, its events are
handled one by one so that one bad event cannot hold up the others.

Failures retry with a doubling delay. On RabbitMQ a failed message is moved to a holding queue
per attempt whose TTL is the delay and which dead-letters back into the consumer's queue; the
queue keeps flowing meanwhile. A Kafka partition is an ordered log, so a stream consumer retries
in place (holding back only that partition). After ``max_attempts`` the message is recorded in
the ``dead_letters`` table with its error (``skybook dlq list|replay``).

A failure that says nothing about the event (a lock another transaction held past the lock
timeout, the database restarting or out of connections: ``retry_can_help``) does not count
towards ``max_attempts``: it is retried with the same growing delay, up to ``max_busy_retries``
times, so a minute of lock contention cannot send a good event to the dead letters.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from skybook.platform.clock import Clock
from skybook.platform.dberrors import retry_can_help
from skybook.platform.dispatcher import Consumer, handle_alone, handle_together
from skybook.platform.events import Event
from skybook.platform.messaging import ATTEMPTS_HEADER, BUSY_RETRIES_HEADER, Names, decode, decode_many
from skybook.platform.messaging.metrics import WORKER_BATCH, WORKER_HANDLED
from skybook.platform.outbox import dead_letters
from skybook.platform.uow import UnitOfWork

log = logging.getLogger("skybook.worker")


_MAX_RECONNECT_BACKOFF_S = 2.0


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    prefetch: int = 64
    """Unacknowledged messages per consumer, and most events handled in one transaction."""
    max_attempts: int = 5
    max_busy_retries: int = 100
    """Retries after failures that ``retry_can_help`` (they do not count towards ``max_attempts``)."""
    retry_base_delay: float = 1.0
    kafka_fetch_wait_max_ms: int = 100

    def delay(self, attempt: int) -> float:
        """Wait before attempt ``attempt + 1`` (after ``attempt`` failures): base, 2*base, 4*base, ..."""
        return float(self.retry_base_delay * 2 ** (attempt - 1))

    def after_failure(self, failures: int, busy: int, error: BaseException) -> tuple[int, int] | None:
        """Counts after one more failure: (failures, busy retries), or None when it is time to give up.

        ``failures`` counts the errors that may be the event's own; ``busy`` those that
        ``retry_can_help``.
        """
        if retry_can_help(error):
            busy += 1
            return (failures, busy) if busy <= self.max_busy_retries else None
        failures += 1
        return (failures, busy) if failures < self.max_attempts else None

    @property
    def retry_steps(self) -> int:
        """How many delays there are (a RabbitMQ retry queue each): one per retry ``max_attempts``
        allows, and at least one, which retries after failures that do not count wait in."""
        return max(1, self.max_attempts - 1)

    def retry_step(self, failures: int, busy: int) -> int:
        """Which delay the next retry waits (1 = base, 2 = 2*base, ...), capped at the longest."""
        return max(1, min(failures + busy, self.retry_steps))


class Handling:
    """Handles events for one consumer in units of work; shared by both transports and ``dlq replay``."""

    def __init__(self, consumer: Consumer, uow: Callable[[], UnitOfWork], clock: Clock) -> None:
        self.consumer = consumer
        self._uow = uow
        self._clock = clock

    async def one(self, event: Event) -> bool:
        """Handle one event in its own transaction; False when it was a redelivery."""
        return await handle_alone(self.consumer, event, self._uow, self._clock)

    async def together(self, events: Sequence[Event]) -> None:
        """Handle events in one transaction (all or none)."""
        started = time.perf_counter()
        fresh = await handle_together(self.consumer, events, self._uow, self._clock)
        self._count(len(fresh), len(events) - len(fresh))
        WORKER_BATCH.labels(self.consumer.name).observe(time.perf_counter() - started)

    async def batch(self, events: Sequence[Event]) -> list[BaseException | None]:
        """Handle events together in one transaction; on failure one by one. Returns each one's error."""
        if not events:
            return []
        if len(events) > 1:
            try:
                await self.together(events)
                return [None] * len(events)
            except Exception:
                log.info("batch of %d failed for %s; handling one by one", len(events), self.consumer.name)
        errors: list[BaseException | None] = []
        for event in events:
            try:
                errors.append(await self.attempt(event))
            except Exception as exc:  # pragma: no cover - attempt() returns errors
                errors.append(exc)
        return errors

    async def attempt(self, event: Event) -> BaseException | None:
        """Handle one event; returns its error instead of raising."""
        try:
            fresh = await self.one(event)
        except Exception as exc:
            log.warning("consumer %s failed on event %s: %s", self.consumer.name, event.id, exc)
            return exc
        self._count(int(fresh), int(not fresh))
        return None

    def _count(self, handled: int, duplicates: int) -> None:
        if handled:
            WORKER_HANDLED.labels(self.consumer.name, "handled").inc(handled)
        if duplicates:
            WORKER_HANDLED.labels(self.consumer.name, "duplicate").inc(duplicates)

    async def dead_letter(self, event: Event, error: BaseException | str, attempts: int) -> None:
        """Give up on an event: record it with its error for ``skybook dlq``."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        async with self._uow() as uow:
            await uow.conn.execute(
                sa.insert(dead_letters).values(
                    consumer=self.consumer.name,
                    event_id=event.id,
                    event_type=event.type,
                    envelope=event.envelope(),
                    error=text[:4000],
                    attempts=attempts,
                    failed_at=self._clock.now(),
                )
            )
            await uow.commit()
        WORKER_HANDLED.labels(self.consumer.name, "dead_lettered").inc()
        log.error("event %s dead-lettered for %s after %d attempts: %s", event.id, self.consumer.name, attempts, text)


class Worker:
    """Runs the consumers of one process until stopped; reconnects with backoff when a broker goes away."""

    def __init__(
        self,
        consumers: Sequence[Consumer],
        uow: Callable[[], UnitOfWork],
        clock: Clock,
        names: Names,
        options: WorkerOptions,
        *,
        rabbitmq_url: str | None,
        kafka_bootstrap_servers: str | None,
    ) -> None:
        self._consumers = list(consumers)
        self._uow = uow
        self._clock = clock
        self._names = names
        self._options = options
        self._rabbitmq_url = rabbitmq_url
        self._kafka = kafka_bootstrap_servers
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def loops(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        """One loop per consumer on the broker of its transport (consumers without their broker are reported)."""
        found: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        for consumer in self._consumers:
            handling = Handling(consumer, self._uow, self._clock)
            if consumer.transport == "tasks" and self._rabbitmq_url:
                found.append((consumer.name, functools.partial(self._rabbit_loop, handling)))
            elif consumer.transport == "stream" and self._kafka:
                found.append((consumer.name, functools.partial(self._kafka_loop, handling)))
            else:
                log.warning("consumer %s needs a %s broker, which is not configured", consumer.name, consumer.transport)
        return found

    async def run(self) -> None:
        tasks = [asyncio.ensure_future(self._forever(name, loop)) for name, loop in self.loops()]
        if not tasks:
            raise RuntimeError("no consumer can run: set SKYBOOK_RABBITMQ_URL and/or SKYBOOK_KAFKA_BOOTSTRAP_SERVERS")
        await self._stop.wait()
        # Let each loop finish its batch (Kafka's consume runs in a thread that cannot be cancelled);
        # whatever is still unacknowledged after that is redelivered to another worker.
        _done, pending = await asyncio.wait(tasks, timeout=10)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _forever(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except _Stopping:
                return
            except Exception as exc:
                log.warning("consumer %s lost its broker (%s); reconnecting in %.1fs", name, exc, backoff)
            if time.monotonic() - started > 30:
                backoff = 0.5
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=backoff)
            # Capped low: a reconnect attempt costs one refused connect, and a long cap left workers
            # idle for up to half the cap after a 10 s broker outage had ended (the fault run).
            backoff = min(backoff * 2, _MAX_RECONNECT_BACKOFF_S)

    # --- RabbitMQ ---------------------------------------------------------------------------

    async def _rabbit_loop(self, handling: Handling) -> None:
        import aio_pika
        from aiormq.abc import DeliveredMessage
        from aiormq.channel import Channel as RawChannel

        from skybook.platform.messaging.rabbitmq import declare_topology, message

        assert self._rabbitmq_url is not None
        name = handling.consumer.name
        opts = self._options
        connection = await aio_pika.connect(self._rabbitmq_url, timeout=10)
        stopping: asyncio.Future[Any] | None = None
        try:
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=opts.prefetch)
            await declare_topology(channel, self._names, self._consumers)
            await channel.declare_queue(self._names.queue(name), durable=True)
            for attempt in range(1, opts.retry_steps + 1):
                await channel.declare_queue(
                    self._names.retry_queue(name, attempt),
                    durable=True,
                    arguments={
                        "x-message-ttl": int(opts.delay(attempt) * 1000),
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": self._names.queue(name),
                    },
                )
            # Deliveries are taken on the underlying aiormq channel: aio-pika wraps each one in an
            # IncomingMessage (dozens of attribute sets) that this loop does not need.
            raw = await channel.get_underlay_channel()
            assert isinstance(raw, RawChannel)
            # Deliveries, and None when the connection closed or the worker stops: one queue to
            # wait on, instead of three futures (and an asyncio.wait) for every batch.
            arrived: asyncio.Queue[DeliveredMessage | None] = asyncio.Queue()
            connection.close_callbacks.add(lambda *_: arrived.put_nowait(None))
            stopping = asyncio.ensure_future(self._stop.wait())
            stopping.add_done_callback(lambda _: arrived.put_nowait(None))
            await raw.basic_consume(self._names.queue(name), arrived.put)
            ended = False
            while not ended and not self._stop.is_set():
                # What has arrived by the time the first message is here makes the batch. There is no
                # wait for more: the relay already puts a round's events in one message, and a 1 ms
                # wait after an idle spell added that much to every message's latency for the same CPU.
                first = await arrived.get()
                # Messages with the events each carries (one, or an array from the relay), up to
                # ``prefetch`` messages or events for one transaction.
                batch: list[tuple[DeliveredMessage, list[Event]]] = []
                taken = 0
                got = first
                while got is not None:
                    try:
                        carried = decode_many(got.body)
                    except ValueError as exc:
                        # Not events at all: retrying cannot help. Keep the body in the log, drop it.
                        log.error("dropping undecodable message on %s: %s %r", name, exc, got.body[:200])
                        await raw.basic_reject(_tag(got), requeue=False)
                    else:
                        batch.append((got, carried))
                        taken += len(carried)
                    if taken >= opts.prefetch or arrived.empty():  # a message carries at least one event
                        break
                    got = arrived.get_nowait()
                # Handle (and settle) what arrived before the end, then end.
                ended = got is None
                errors = await handling.batch([event for _msg, carried in batch for event in carried])
                if batch and all(e is None for e in errors):
                    # Delivery tags grow on a channel and every earlier one was settled already.
                    await raw.basic_ack(_tag(batch[-1][0]), multiple=True)
                    continue
                # Some failed: each failed event is retried (or dead-lettered) alone, as a message of its
                # own, then the message that carried it is acknowledged with the rest of its events.
                outcome = iter(errors)
                for msg, carried in batch:
                    headers = msg.header.properties.headers
                    failures, busy = _count(headers, ATTEMPTS_HEADER), _count(headers, BUSY_RETRIES_HEADER)
                    for event in carried:
                        error = next(outcome)
                        if error is None:
                            continue
                        counts = opts.after_failure(failures, busy, error)
                        if counts is None:
                            await handling.dead_letter(event, error, failures + busy + 1)
                        else:
                            await channel.default_exchange.publish(
                                message(event, attempts=counts[0], busy_retries=counts[1]),
                                routing_key=self._names.retry_queue(name, opts.retry_step(*counts)),
                                mandatory=True,
                            )
                            WORKER_HANDLED.labels(name, "retried").inc()
                    await raw.basic_ack(_tag(msg))
            if not self._stop.is_set():
                raise ConnectionError("rabbitmq connection closed")
        finally:
            if stopping is not None:
                stopping.cancel()
            with contextlib.suppress(Exception):
                await connection.close()

    # --- Kafka ------------------------------------------------------------------------------

    async def _kafka_loop(self, handling: Handling) -> None:
        import confluent_kafka

        from skybook.platform.messaging.kafka import consumer_config

        assert self._kafka is not None
        consumer = handling.consumer
        topics = sorted({self._names.topic_of_type(t) for t in consumer.event_types})
        client = confluent_kafka.Consumer(
            consumer_config(
                self._kafka,
                self._names.group(consumer.name),
                fetch_wait_max_ms=self._options.kafka_fetch_wait_max_ms,
            )
        )
        try:
            client.subscribe(topics)
            while not self._stop.is_set():
                msgs = await asyncio.to_thread(_take, client, self._options.prefetch)
                good = []
                for m in msgs:
                    err = m.error()
                    if err is None:
                        good.append(m)
                    elif err.code() != confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART:
                        log.warning("kafka consumer %s: %s", consumer.name, err)
                if not good:
                    continue
                events: list[Event] = []
                for m in good:
                    try:
                        event = decode(m.value() or b"")
                    except ValueError as exc:
                        log.error("skipping undecodable record on %s: %s", m.topic(), exc)
                        continue
                    if event.type in consumer.event_types:
                        events.append(event)
                await self._handle_in_order(handling, events)
                # After the database commit, without waiting for the broker's answer: a commit that
                # is lost (crash, rebalance) only redelivers records the inbox already holds.
                client.commit(asynchronous=True)
        finally:
            await asyncio.to_thread(client.close)

    async def _handle_in_order(self, handling: Handling, events: Sequence[Event]) -> None:
        if not events:
            return
        try:
            await handling.together(events)
            return
        except Exception:
            log.info("batch of %d failed for %s; handling in order", len(events), handling.consumer.name)
        # A partition is an ordered log: each event is retried in place before the next one is
        # looked at, so a later event of the same aggregate never overtakes a failing one.
        opts = self._options
        for event in events:
            failures = busy = 0
            while (error := await handling.attempt(event)) is not None:
                counts = opts.after_failure(failures, busy, error)
                if counts is None:
                    await handling.dead_letter(event, error, failures + busy + 1)
                    break
                failures, busy = counts
                WORKER_HANDLED.labels(handling.consumer.name, "retried").inc()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=opts.delay(opts.retry_step(failures, busy)))
                if self._stop.is_set():
                    raise _Stopping  # leave it uncommitted: the next worker retries


def _tag(msg: Any) -> int:
    tag: int = msg.delivery.delivery_tag
    return tag


def _count(headers: object, name: str) -> int:
    """A retry count carried in a message header (0 when absent or garbled)."""
    value = headers.get(name, 0) if isinstance(headers, dict) else 0
    return value if isinstance(value, int) and value >= 0 else 0


def _take(client: Any, most: int) -> list[Any]:
    """Wait for a first record, then take whatever else is already there (up to ``most``).

    ``consume(n, timeout)`` alone waits until n records arrived or the timeout passed, which
    would hold every record of a quiet stream back for the whole timeout.
    """
    first: list[Any] = client.consume(1, 0.2)
    if not first or most <= 1:
        return first
    more: list[Any] = client.consume(most - 1, 0)
    return first + more


class _Stopping(Exception):
    """The worker stops in the middle of retrying: the record stays uncommitted for the next one."""
