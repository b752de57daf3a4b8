"""Versioned event schemas: the base of every event payload model, and the shared envelope.

Each context declares the ``data`` of the events it owns as ``EventPayload`` subclasses in its
``events`` module (``OrderTicketedV1`` is version 1 of ``order.ticketed``). A payload model
forbids unknown fields, so a field added to an event without adding it to the model fails the
catalogue test: the published schema (AsyncAPI, docs/events.md) cannot drift from what is sent.
A change that is not backwards compatible gets a new version (``...V2``) next to the old one.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class EventPayload(BaseModel):
    """The ``data`` of one event type in one version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: ClassVar[str]
    """The envelope's ``type``, e.g. ``order.ticketed``."""
    event_version: ClassVar[int] = 1
    """The envelope's ``version``."""

    @classmethod
    def summary(cls) -> str:
        """The first line of the model's docstring: what happened."""
        return (cls.__doc__ or cls.event_type).strip().splitlines()[0]


class MoneyData(BaseModel):
    """An amount in minor units (cents) and its ISO 4217 currency."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: int = Field(description="Amount in minor units.", examples=[15000])
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 currency code.", examples=["EUR"])


class EventEnvelope(BaseModel):
    """The envelope every event travels in, on every transport (outbox, Kafka, RabbitMQ)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: uuid.UUID = Field(description="Event id (UUIDv7, time ordered); consumers deduplicate by it.")
    type: str = Field(description="Event type, e.g. order.ticketed; the RabbitMQ routing key.")
    version: int = Field(ge=1, description="Schema version of data for this type.")
    occurred_at: dt.datetime = Field(description="When the change committed (UTC, ISO 8601).")
    tenant_id: str | None = Field(description="Tenant that owns the aggregate, when known.")
    aggregate_id: str = Field(description="Id of the changed aggregate; the Kafka message key (per-aggregate order).")
    correlation_id: str | None = Field(description="Request id of the HTTP request that started the chain.")
    causation_id: str | None = Field(description="Id of the event whose handling raised this one.")
    data: dict[str, Any] = Field(description="The type's payload, described by its versioned schema.")
