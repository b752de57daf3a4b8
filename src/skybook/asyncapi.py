"""The event catalogue of every context and the AsyncAPI 3.0 document generated from it.

Channels follow the event backbone: domain events go to one Kafka topic per context
(``skybook.<context>.events``, message key = aggregate id), and to the RabbitMQ topic exchange
``skybook.tasks`` with the event type as routing key, where each ``tasks`` consumer has a durable
queue of its own; a message there carries one event, or several consecutive events of one type as
a JSON array (``<Model>Batch``). Payload schemas come from the versioned Pydantic models, so the document is
exactly what the code validates against.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic.json_schema import models_json_schema

from skybook import __version__
from skybook.booking import events as booking_events
from skybook.inventory import events as inventory_events
from skybook.payments import events as payment_events
from skybook.platform.dispatcher import Consumer
from skybook.platform.event_schemas import EventEnvelope, EventPayload
from skybook.platform.events import Event
from skybook.platform.messaging import EVENTS_HEADER

TASKS_EXCHANGE = "skybook.tasks"
_SCHEMA_REF = "#/components/schemas/{model}"

CATALOGUE: dict[tuple[str, int], type[EventPayload]] = {
    (m.event_type, m.event_version): m
    for m in (*booking_events.EVENTS, *inventory_events.EVENTS, *payment_events.EVENTS)
}
"""Every event type the platform emits, by (type, version)."""


def context_of(event_type: str) -> str:
    """The context (and so the Kafka topic) an event type belongs to."""
    return Event(type=event_type, aggregate_id="", data={}).context


def topic_of(event_type: str) -> str:
    """The Kafka topic of an event type."""
    return f"skybook.{context_of(event_type)}.events"


def validate_event(event: Event) -> EventPayload:
    """Check an event against its schema; raises KeyError for an unknown type or version."""
    EventEnvelope.model_validate(event.envelope())
    return CATALOGUE[(event.type, event.version)].model_validate(event.data)


def _batch_of(message: str) -> str:
    """The message of several events of ``message``'s type in one RabbitMQ message (a JSON array)."""
    return f"{message}Batch"


def _ident(text: str) -> str:
    """An AsyncAPI component key (``^[a-zA-Z0-9.\\-_]+$``) from any name."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_")


def _camel(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", text) if part)


def build_asyncapi(consumers: Iterable[Consumer] = ()) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every channel, message and (given the consumers) worker subscription."""
    models = sorted(CATALOGUE.values(), key=lambda m: (m.event_type, m.event_version))
    _, top = models_json_schema(
        [(EventEnvelope, "validation"), *((m, "validation") for m in models)], ref_template=_SCHEMA_REF
    )
    schemas: dict[str, Any] = dict(top.get("$defs", {}))

    messages: dict[str, Any] = {}
    for m in models:
        name = m.__name__
        messages[name] = {
            "name": m.event_type,
            "title": f"{m.event_type} v{m.event_version}",
            "summary": m.summary(),
            "contentType": "application/json",
            "payload": {
                "allOf": [
                    {"$ref": _SCHEMA_REF.format(model="EventEnvelope")},
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": m.event_type},
                            "version": {"const": m.event_version},
                            "data": {"$ref": _SCHEMA_REF.format(model=name)},
                        },
                    },
                ]
            },
            "correlationId": {
                "description": "Request that started the chain.",
                "location": "$message.payload#/correlation_id",
            },
            "bindings": {
                "kafka": {
                    "key": {"type": "string", "description": "aggregate_id: one aggregate's events stay in order."},
                    "bindingVersion": "0.5.0",
                },
                "amqp": {"contentEncoding": "utf-8", "messageType": m.event_type, "bindingVersion": "0.3.0"},
            },
        }
        # On RabbitMQ the relay puts consecutive events of one type in one message, as an array.
        messages[_batch_of(name)] = {
            "name": f"{m.event_type}.batch",
            "title": f"{m.event_type} v{m.event_version}, several in one message",
            "summary": f"Two or more {m.event_type} events in commit order, up to SKYBOOK_RABBITMQ_EVENTS_PER_MESSAGE "
            f"(RabbitMQ only; header {EVENTS_HEADER} holds their number). Each is deduplicated and retried on its own.",
            "contentType": "application/json",
            "payload": {"type": "array", "minItems": 2, "items": messages[name]["payload"]},
            "bindings": {
                "amqp": {"contentEncoding": "utf-8", "messageType": m.event_type, "bindingVersion": "0.3.0"},
            },
        }

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    by_topic: dict[str, list[str]] = {}
    for m in models:
        by_topic.setdefault(topic_of(m.event_type), []).append(m.__name__)
    for topic, names in sorted(by_topic.items()):
        key = _ident(topic)
        channels[key] = {
            "address": topic,
            "title": topic,
            "description": f"Domain events of the {topic.split('.')[1]} context, keyed by aggregate id.",
            "servers": [{"$ref": "#/servers/kafka"}],
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
            "bindings": {"kafka": {"topic": topic, "bindingVersion": "0.5.0"}},
        }
        operations[f"publish{_camel(topic)}"] = {
            "action": "send",
            "title": f"Relay publishes to {topic}",
            "summary": "The outbox relay publishes each committed event at least once (acks=all, idempotent producer).",
            "channel": {"$ref": f"#/channels/{key}"},
            "messages": [{"$ref": f"#/channels/{key}/messages/{n}"} for n in names],
        }
    for m in models:
        key = _ident(f"tasks.{m.event_type}")
        carried = (m.__name__, _batch_of(m.__name__))  # one event, or an array of them
        channels[key] = {
            "address": m.event_type,
            "title": f"{TASKS_EXCHANGE} / {m.event_type}",
            "description": f"Routing key {m.event_type} on the topic exchange {TASKS_EXCHANGE}.",
            "servers": [{"$ref": "#/servers/rabbitmq"}],
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in carried},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {
                        "name": TASKS_EXCHANGE,
                        "type": "topic",
                        "durable": True,
                        "autoDelete": False,
                        "vhost": "/",
                    },
                    "bindingVersion": "0.3.0",
                }
            },
        }
        operations[f"publish{_camel(key)}"] = {
            "action": "send",
            "title": f"Relay publishes {m.event_type} to {TASKS_EXCHANGE}",
            "summary": "Publisher confirms with mandatory: an unroutable message is noticed, never dropped.",
            "channel": {"$ref": f"#/channels/{key}"},
            "messages": [{"$ref": f"#/channels/{key}/messages/{n}"} for n in carried],
            "bindings": {"amqp": {"deliveryMode": 2, "mandatory": True, "bindingVersion": "0.3.0"}},
        }
    known = {m.event_type: m for m in models}
    for c in consumers:
        for event_type in sorted(c.event_types):
            if event_type not in known:
                continue
            name = known[event_type].__name__
            names = [name]
            if c.transport == "tasks":
                names.append(_batch_of(name))
                key = _ident(f"tasks.{event_type}")
                queue = {
                    "queue": {"name": f"skybook.{c.name}", "durable": True, "exclusive": False, "autoDelete": False}
                }
                bindings: dict[str, Any] = {"amqp": {**queue, "ack": True, "bindingVersion": "0.3.0"}}
            else:
                key = _ident(topic_of(event_type))
                bindings = {
                    "kafka": {"groupId": {"type": "string", "const": f"skybook.{c.name}"}, "bindingVersion": "0.5.0"}
                }
            operations[f"consume{_camel(c.name)}{_camel(event_type)}"] = {
                "action": "receive",
                "title": f"{c.name} handles {event_type}",
                "summary": "Idempotent: the inbox records the event id with the consumer's effect.",
                "channel": {"$ref": f"#/channels/{key}"},
                "messages": [{"$ref": f"#/channels/{key}/messages/{n}"} for n in names],
                "bindings": bindings,
            }

    return {
        "asyncapi": "3.0.0",
        "id": "urn:skybook:events",
        "info": {
            "title": "Skybook events",
            "version": __version__,
            "description": (
                "Every event of the Skybook platform in one envelope (see docs/events.md). Domain events go to "
                "one Kafka topic per context; the same events are routed to the RabbitMQ topic exchange "
                f"{TASKS_EXCHANGE} by type, where each task consumer reads its own durable queue. Delivery is at "
                "least once; consumers deduplicate by event id."
            ),
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "localhost:9092",
                "protocol": "kafka",
                "description": "Event stream (topics skybook.<context>.events).",
            },
            "rabbitmq": {
                "host": "localhost:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": f"Task queues behind the topic exchange {TASKS_EXCHANGE}.",
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }
