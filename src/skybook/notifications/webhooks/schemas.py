"""API schemas of tenant webhooks."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import AwareDatetime, Field

from skybook.notifications.webhooks.catalogue import WebhookEventType
from skybook.platform.schemas import Output, Page, StrictInput

_URL = Field(
    min_length=8,
    max_length=2048,
    pattern=r"^https?://[^\s]+$",
    description="Where deliveries are POSTed: an https URL whose host resolves to a public address.",
    examples=["https://hooks.agency-a.example.com/skybook"],
)
_EVENT_TYPES = Field(
    min_length=1,
    max_length=12,
    description="The event types to receive (see listWebhookEventTypes).",
    examples=[["order.confirmed", "order.ticketed"]],
)


class WebhookEndpointCreate(StrictInput):
    """Register a webhook endpoint for your tenant."""

    url: str = _URL
    event_types: list[WebhookEventType] = _EVENT_TYPES
    description: str = Field(
        "", max_length=200, description="A note for your team.", examples=["order feed for the back office"]
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "url": "https://hooks.agency-a.example.com/skybook",
                    "event_types": ["order.confirmed", "order.ticketed"],
                    "description": "order feed for the back office",
                }
            ]
        }
    }


class WebhookEndpointUpdate(StrictInput):
    """Change an endpoint; fields left out keep their value."""

    event_types: list[WebhookEventType] | None = Field(
        None, min_length=1, max_length=12, description="The event types to receive.", examples=[["order.ticketed"]]
    )
    enabled: bool | None = Field(None, description="Whether deliveries are sent to it.", examples=[False])
    description: str | None = Field(None, max_length=200, description="A note for your team.", examples=["paused"])

    model_config = {"json_schema_extra": {"examples": [{"event_types": ["order.ticketed"], "enabled": True}]}}

    def changes(self) -> dict[str, Any]:
        """The fields the caller set (null is not a value for any of them)."""
        return {k: v for k, v in self.model_dump(exclude_unset=True).items() if v is not None}


class WebhookEndpointRead(Output):
    """A webhook endpoint (never with its secret)."""

    id: uuid.UUID = Field(description="Endpoint id.")
    url: str = Field(
        description="Where deliveries are POSTed.", examples=["https://hooks.agency-a.example.com/skybook"]
    )
    description: str = Field(description="A note for your team.")
    event_types: list[str] = Field(description="The event types it receives.", examples=[["order.ticketed"]])
    enabled: bool = Field(description="Whether deliveries are sent to it.")
    previous_secret_expires_at: dt.datetime | None = Field(
        description="After a rotation: until when deliveries are also signed with the previous secret."
    )
    created_at: dt.datetime = Field(description="When it was registered.")
    updated_at: dt.datetime = Field(description="When it last changed.")


class WebhookEndpointCreated(WebhookEndpointRead):
    """A new endpoint with its signing secret, shown only in this answer."""

    secret: str = Field(
        description="The signing secret (whsec_...). Store it now: it is never shown again.",
        examples=["whsec_3q2-7wEXAMPLEONLY"],  # pragma: allowlist secret
    )


class WebhookEndpointPage(Page[WebhookEndpointRead]):
    """A page of webhook endpoints."""


class WebhookSecret(Output):
    """A rotated signing secret, shown only in this answer."""

    secret: str = Field(
        description="The new signing secret (whsec_...); deliveries are signed with it from now on.",
        examples=["whsec_3q2-7wEXAMPLEONLY"],  # pragma: allowlist secret
    )
    previous_secret_expires_at: dt.datetime | None = Field(
        description="Until when deliveries also carry a signature with the previous secret (null: not at all)."
    )


class WebhookAttemptRead(Output):
    """One attempt to deliver."""

    number: int = Field(description="1 for the first attempt.", examples=[1])
    attempted_at: dt.datetime = Field(description="When it was made.")
    response_status: int | None = Field(description="The receiver's HTTP status (null: no answer).", examples=[500])
    error: str | None = Field(description="Why it did not count as delivered (null: delivered).", examples=["HTTP 500"])
    duration_ms: int = Field(description="How long it took, in milliseconds.", examples=[87])


class WebhookDeliveryRead(Output):
    """One event sent (or to be sent) to one endpoint, with its attempts."""

    id: uuid.UUID = Field(description="Delivery id.")
    endpoint_id: uuid.UUID = Field(description="The endpoint it goes to.")
    event_id: uuid.UUID = Field(description="The event's id, also sent as Skybook-Event-Id.")
    event_type: str = Field(description="The event's type.", examples=["order.ticketed"])
    status: str = Field(description="pending, succeeded or failed (retries exhausted).", examples=["succeeded"])
    attempts: int = Field(description="Attempts made so far.", examples=[1])
    response_status: int | None = Field(description="HTTP status of the last answer.", examples=[200])
    last_error: str | None = Field(description="Why the last attempt failed, if it did.")
    next_attempt_at: dt.datetime | None = Field(description="When the next attempt is due (pending only).")
    last_attempt_at: dt.datetime | None = Field(description="When it was last attempted.")
    completed_at: dt.datetime | None = Field(description="When it succeeded or was given up.")
    replay_of: uuid.UUID | None = Field(description="The delivery this one replays, if it is a replay.")
    created_at: dt.datetime = Field(description="When it was created.")
    attempt_log: list[WebhookAttemptRead] = Field(description="Every attempt, oldest first.")


class WebhookDeliveryPage(Page[WebhookDeliveryRead]):
    """A page of an endpoint's delivery log, newest first."""


class WebhookReplayFailed(StrictInput):
    """Replay the failed deliveries of an endpoint."""

    since: AwareDatetime = Field(
        description="Replay failed deliveries created at or after this time (with a UTC offset).",
        examples=["2026-11-27T00:00:00Z"],
    )

    model_config = {"json_schema_extra": {"examples": [{"since": "2026-11-27T00:00:00Z"}]}}


class WebhookReplayed(Output):
    """The new deliveries a replay created."""

    delivery_ids: list[uuid.UUID] = Field(description="Ids of the new deliveries (at most 1000 per call).")


class WebhookEventTypeRead(Output):
    """An event type an endpoint can subscribe to."""

    type: str = Field(description="The event type.", examples=["order.ticketed"])
    description: str = Field(description="When it happens.", examples=["The order was paid and its e-tickets issued."])


class WebhookEventTypeList(Output):
    """Every event type an endpoint can subscribe to."""

    items: list[WebhookEventTypeRead] = Field(description="The event types.")
