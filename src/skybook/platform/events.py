"""The event envelope every context uses, and UUIDv7 ids."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uuid_utils


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7), good for index locality."""
    return uuid.UUID(bytes=uuid_utils.uuid7().bytes)


@dataclass(frozen=True, slots=True)
class Event:
    """A domain event in the shared envelope (see docs/events.md)."""

    type: str
    aggregate_id: str
    data: dict[str, Any]
    version: int = 1
    tenant_id: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    id: uuid.UUID = field(default_factory=uuid7)
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def context(self) -> str:
        """The bounded context that owns the event, e.g. ``booking`` for ``order.confirmed``."""
        return EVENT_CONTEXTS.get(self.type.split(".", 1)[0], "platform")

    def envelope(self) -> dict[str, Any]:
        """The JSON-ready envelope as published to consumers."""
        return {
            "id": str(self.id),
            "type": self.type,
            "version": self.version,
            "occurred_at": self.occurred_at.isoformat(),
            "tenant_id": self.tenant_id,
            "aggregate_id": self.aggregate_id,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "data": self.data,
        }


EVENT_CONTEXTS = {
    "hold": "booking",
    "order": "booking",
    "seat": "booking",
    "inventory": "inventory",
    "flight": "inventory",
    "schedule": "inventory",
    "payment": "payments",
}
