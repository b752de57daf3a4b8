"""Events of the payments context, version by version."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import Field

from skybook.platform.event_schemas import EventPayload


class PaymentCapturedV1(EventPayload):
    """The order's total was captured; the ticketing consumer issues the e-tickets."""

    event_type = "payment.captured"
    order_id: uuid.UUID = Field(description="Order id.")
    payment_id: uuid.UUID = Field(description="Payment id.")
    amount: int = Field(description="Captured amount in minor units.")
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 currency code.")


class PaymentDeclinedV1(EventPayload):
    """The card was declined; the seats stay held until the ticketing deadline."""

    event_type = "payment.declined"
    order_id: uuid.UUID = Field(description="Order id.")
    payment_id: uuid.UUID = Field(description="Payment id.")
    decline_code: str | None = Field(description="The processor's reason, e.g. insufficient_funds.")


class PaymentFailedV1(EventPayload):
    """The payment provider failed; nothing was charged."""

    event_type = "payment.failed"
    order_id: uuid.UUID = Field(description="Order id.")
    payment_id: uuid.UUID = Field(description="Payment id.")
    decline_code: str | None = Field(description="The processor's error code, if any.")


class PaymentRefundedV1(EventPayload):
    """A captured payment went back to the card: voided on the day of payment, refunded after."""

    event_type = "payment.refunded"
    order_id: uuid.UUID = Field(description="Order id.")
    payment_id: uuid.UUID = Field(description="Payment id.")
    kind: Literal["void", "refund"] = Field(description="void (same day) or refund.")
    amount: int = Field(description="Amount returned in minor units.")
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 currency code.")


EVENTS: tuple[type[EventPayload], ...] = (PaymentCapturedV1, PaymentDeclinedV1, PaymentFailedV1, PaymentRefundedV1)
