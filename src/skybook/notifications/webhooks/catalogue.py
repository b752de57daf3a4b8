"""The event types a tenant may subscribe a webhook endpoint to: the events about its own orders."""

from __future__ import annotations

from typing import Literal, get_args

WebhookEventType = Literal[
    "hold.created",
    "hold.released",
    "hold.expired",
    "order.confirmed",
    "order.ticketed",
    "order.cancelled",
    "order.expired",
    "payment.captured",
    "payment.declined",
    "payment.failed",
    "payment.refunded",
    "seat.assigned",
]

WEBHOOK_EVENT_TYPES: frozenset[str] = frozenset(get_args(WebhookEventType))
"""Every subscribable type; operator-side events (inventory, flights, schedules) are not offered."""

EVENT_DESCRIPTIONS: dict[str, str] = {
    "hold.created": "Seats were held for a new order.",
    "hold.released": "A hold was released before confirmation.",
    "hold.expired": "A hold passed its time limit and its seats went back on sale.",
    "order.confirmed": "Passengers and contact were added to a held order.",
    "order.ticketed": "The order was paid and its e-tickets issued.",
    "order.cancelled": "A confirmed or ticketed order was cancelled.",
    "order.expired": "A confirmed order was not paid in time.",
    "payment.captured": "A payment was captured.",
    "payment.declined": "A card was declined.",
    "payment.failed": "A payment attempt failed at the provider.",
    "payment.refunded": "A payment was refunded.",
    "seat.assigned": "Seats were assigned to passengers.",
}
