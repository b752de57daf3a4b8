"""Event backbone: ports and naming shared by the relay, the workers and their broker adapters.

The embedded default needs none of this (``platform.dispatcher`` delivers in process). Scaled out,
``skybook relay`` publishes the outbox to Kafka (the ordered domain-event stream, one topic per
context, keyed by aggregate) and RabbitMQ (work queues, one per consumer), and ``skybook worker``
runs every consumer from them, claiming each event in the inbox in the same transaction as its
effect.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from skybook.platform.dispatcher import Consumer
from skybook.platform.events import EVENT_CONTEXTS, Event

ATTEMPTS_HEADER = "x-skybook-attempts"
# Retries after errors that say nothing about the event (busy, database away); see WorkerOptions.
BUSY_RETRIES_HEADER = "x-skybook-busy-retries"
# How many events a RabbitMQ message carries, when more than one (its body is a JSON array).
EVENTS_HEADER = "x-skybook-events"


@dataclass(frozen=True, slots=True)
class Names:
    """Broker object names, all under one prefix (a setting, so test runs and tenants of a broker never collide)."""

    prefix: str = "skybook"

    def topic(self, context: str) -> str:
        """Kafka topic of one bounded context's events."""
        return f"{self.prefix}.{context}.events"

    def topic_of_type(self, event_type: str) -> str:
        return self.topic(context_of(event_type))

    @property
    def exchange(self) -> str:
        """RabbitMQ topic exchange for tasks; routing key = event type."""
        return f"{self.prefix}.tasks"

    def queue(self, consumer: str) -> str:
        """Durable RabbitMQ queue of one consumer."""
        return f"{self.prefix}.{consumer}"

    def retry_queue(self, consumer: str, attempt: int) -> str:
        """Holding queue where a message waits before its next attempt (its TTL is the delay)."""
        return f"{self.prefix}.{consumer}.retry.{attempt}"

    def group(self, consumer: str) -> str:
        """Kafka consumer group of one consumer."""
        return f"{self.prefix}.{consumer}"


def context_of(event_type: str) -> str:
    """The context owning an event type (the same rule as ``Event.context``)."""
    return EVENT_CONTEXTS.get(event_type.split(".", 1)[0], "platform")


def encode(event: Event) -> bytes:
    """The wire form of an event: its JSON envelope (compact UTF-8 JSON; orjson, as it is on every message)."""
    return orjson.dumps(event.envelope(), default=str, option=orjson.OPT_NON_STR_KEYS)


def encode_many(encoded: Sequence[bytes]) -> bytes:
    """Several encoded envelopes as one message body: a JSON array of them, in the order given."""
    return b"[" + b",".join(encoded) + b"]"


def decode(body: bytes | str) -> Event:
    """Rebuild an event from its JSON envelope; ValueError when it is not one."""
    try:
        return _event(orjson.loads(body))
    except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"not an event envelope: {exc}") from exc


def decode_many(body: bytes | str) -> list[Event]:
    """The events of a message body: one envelope, or a non-empty JSON array of envelopes (``encode_many``).

    ValueError when the body, or any element of the array, is not an envelope: the relay writes
    whole arrays, so a message with one bad element is not one of ours.
    """
    try:
        doc = orjson.loads(body)
        if not isinstance(doc, list):
            return [_event(doc)]
        if not doc:
            raise ValueError("an empty array carries no event")
        return [_event(env) for env in doc]
    except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"not an event envelope: {exc}") from exc


def _utc(at: datetime) -> datetime:
    """An aware time: ``encode`` writes the offset, and a time without one is read as UTC."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def _event(env: dict[str, Any]) -> Event:
    return Event(
        id=uuid.UUID(env["id"]),
        type=str(env["type"]),
        version=int(env["version"]),
        occurred_at=_utc(datetime.fromisoformat(env["occurred_at"])),
        tenant_id=env.get("tenant_id"),
        aggregate_id=str(env["aggregate_id"]),
        correlation_id=env.get("correlation_id"),
        causation_id=env.get("causation_id"),
        data=dict(env["data"]),
    )


class Publisher(Protocol):
    """A broker the relay publishes to. ``publish`` returns how many leading events the broker confirmed."""

    destination: str

    def wants(self, event_type: str) -> bool:
        """Whether events of this type go to this broker at all."""
        ...

    async def publish(self, events: Sequence[Event]) -> int: ...

    async def close(self) -> None: ...


class PublishFailed(Exception):
    """The broker did not confirm every event of a batch; the rest stays pending."""


def load_consumers(spec: str) -> list[Consumer]:
    """Consumers from ``module:function`` entries (comma-separated); each function returns consumers."""
    found: list[Consumer] = []
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        module, _, attr = entry.partition(":")
        factory = getattr(importlib.import_module(module), attr or "consumers")
        made: Iterable[Consumer] = factory()
        found.extend(made)
    return found


def check_unique(consumers: Sequence[Consumer]) -> None:
    """Queue, group and inbox names come from consumer names, so two consumers must never share one."""
    names = [c.name for c in consumers]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"consumer names must be unique: {', '.join(dupes)}")
