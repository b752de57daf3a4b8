"""Kafka adapters (confluent-kafka): the relay's idempotent producer and the workers' consumer groups.

Domain events go to ``<prefix>.<context>.events`` keyed by aggregate id, so all events of one
booking land on one partition and are read in the order they were committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import confluent_kafka

from skybook.platform.events import Event
from skybook.platform.messaging import Names, encode

log = logging.getLogger("skybook.kafka")

_PENDING = object()


class KafkaPublisher:
    """Publishes events with acks=all and the idempotent producer (no duplicates or reordering on retry)."""

    destination = "stream"

    def __init__(self, bootstrap_servers: str, names: Names, *, message_timeout_seconds: float = 10.0) -> None:
        self._names = names
        self._timeout = message_timeout_seconds
        self._config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
            # A batch is flushed right after it is produced; a millisecond of linger lets
            # librdkafka pack it into few requests without adding noticeable latency.
            "linger.ms": 1,
            # Delivery gives up after this; the relay then retries the rows itself, later.
            "message.timeout.ms": int(message_timeout_seconds * 1000),
            "socket.connection.setup.timeout.ms": 5000,
        }
        self._producer: confluent_kafka.Producer | None = None

    def wants(self, event_type: str) -> bool:
        return True  # the stream carries every domain event

    def _client(self) -> confluent_kafka.Producer:
        if self._producer is None:
            self._producer = confluent_kafka.Producer(self._config)
        return self._producer

    async def publish(self, events: Sequence[Event]) -> int:
        producer = self._client()
        results: list[object] = [_PENDING] * len(events)

        def done(i: int) -> Any:
            def callback(err: confluent_kafka.KafkaError | None, _msg: confluent_kafka.Message) -> None:
                results[i] = err

            return callback

        for i, event in enumerate(events):
            while True:
                try:
                    producer.produce(
                        self._names.topic(event.context),
                        key=event.aggregate_id.encode(),
                        value=encode(event),
                        headers={"type": event.type, "id": str(event.id)},
                        on_delivery=done(i),
                    )
                    break
                except BufferError:  # local queue full: let deliveries drain
                    await asyncio.to_thread(producer.poll, 0.05)
        # flush waits for every delivery report (at most message.timeout.ms), off the event loop.
        await asyncio.to_thread(producer.flush, self._timeout + 5)
        confirmed = 0
        for result in results:
            if result is not None:
                break
            confirmed += 1
        if confirmed < len(events):
            failure = next((r for r in results if r is not None), None)
            log.warning("kafka confirmed %d of %d events: %s", confirmed, len(events), failure)
            # Start over with a fresh producer: an idempotent producer that lost messages may be
            # in a state where it refuses further ones.
            self._drop()
        return confirmed

    def _drop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.purge()
            producer.flush(0)

    async def close(self) -> None:
        if self._producer is not None:
            await asyncio.to_thread(self._producer.flush, 5)
            self._producer = None


def consumer_config(bootstrap_servers: str, group: str, *, fetch_wait_max_ms: int = 100) -> dict[str, Any]:
    """Settings of a worker's consumer: manual commits after the transaction, earliest offset for new groups."""
    return {
        "bootstrap.servers": bootstrap_servers,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        # A killed worker's partitions move to the others within seconds, not the 45 s default.
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        # Topics appear when their first event is published; look for them often.
        "topic.metadata.refresh.interval.ms": 2000,
        # A broker answers a fetch as soon as a record is there (fetch.min.bytes 1); this bounds
        # how long it holds an empty one.
        "fetch.wait.max.ms": fetch_wait_max_ms,
    }
