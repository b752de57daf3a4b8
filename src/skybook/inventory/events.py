"""Events of the inventory context, version by version."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from pydantic import Field

from skybook.platform.event_schemas import EventPayload


class InventoryChangedV1(EventPayload):
    """Seat counts or fares of flights changed: caches of availability and search must be refreshed."""

    event_type = "inventory.changed"
    flight_ids: list[uuid.UUID] = Field(min_length=1, description="The flights whose availability changed.")
    reason: Literal["hold", "hold_released", "ticketed", "cancelled", "expired", "fare_update"] = Field(
        description="What changed them."
    )
    order_id: uuid.UUID | None = Field(default=None, description="The order that changed them, if any.")


class FlightScheduledV1(EventPayload):
    """A dated flight was published."""

    event_type = "flight.scheduled"
    flight_id: uuid.UUID = Field(description="Flight id.")
    designator: str = Field(description="Carrier and flight number.")
    departure_date: dt.date = Field(description="Local departure date.")


class FlightCancelledV1(EventPayload):
    """A flight was taken off sale; existing orders keep their seats for re-accommodation."""

    event_type = "flight.cancelled"
    flight_id: uuid.UUID = Field(description="Flight id.")


class ScheduleImportedV1(EventPayload):
    """A schedule import created dated flights."""

    event_type = "schedule.imported"
    carrier: str = Field(description="Carrier code.")
    flights_created: int = Field(ge=1, description="Dated flights created.")
    period_start: dt.date = Field(description="First date of the schedule period.")
    period_end: dt.date = Field(description="Last date of the schedule period.")


EVENTS: tuple[type[EventPayload], ...] = (InventoryChangedV1, FlightScheduledV1, FlightCancelledV1, ScheduleImportedV1)
