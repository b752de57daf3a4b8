"""Minimal valid request bodies and path values, keyed by operationId.

The BOLA matrix and the mass-assignment sweep send these; a write operation of the OpenAPI
document without a recipe here fails those suites, so no new route escapes them. Bodies refer
to the real objects of the scene (tenant A's orders, its passengers, the test flight), so a
request refused for the reason under test would otherwise have worked.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from tests.conftest import CARD_OK, PASSWORD, SMALL_JET, Identities, adult
from tests.security.conftest import Scene

Recipe = Callable[[Scene, Identities], Any]

# Writes on operator data (the network, flights, fares): airline staff and platform admins only.
OPERATOR_ONLY_WRITES = (
    "createFlight",
    "importSchedule",
    "updateBookingClass",
    "cancelFlight",
    "createAirport",
    "createAircraftType",
)


def _future(scene: Scene, days: int) -> str:
    return str(date.fromisoformat(scene.flight["departure_date"]) + timedelta(days=days))


JSON_BODIES: dict[str, Recipe] = {
    # Identity
    "signUp": lambda s, i: {"email": "new.traveller@example.com", "password": "a long enough secret"},
    "acceptInvitation": lambda s, i: {"token": s.invitation_token, "password": "a long enough secret"},
    "changePassword": lambda s, i: {"current_password": PASSWORD, "new_password": "another long secret"},
    "createTenant": lambda s, i: {"name": "Agency C", "plan": "standard", "admin_email": "admin@agency-c.example.com"},
    "inviteUser": lambda s, i: {"email": "colleague@agency-a.example.com", "role": "agent"},
    "changeUserRole": lambda s, i: {"role": "tenant_admin"},
    "createApiKey": lambda s, i: {"name": "booking engine", "scopes": ["search", "bookings:read"]},
    # Webhooks (tenant admins)
    "createWebhookEndpoint": lambda s, i: {
        "url": "http://127.0.0.1:9/hooks/back-office",
        "event_types": ["order.ticketed", "order.cancelled"],
        "description": "back office",
    },
    "updateWebhookEndpoint": lambda s, i: {"event_types": ["hold.created", "order.ticketed"], "enabled": True},
    "replayFailedWebhookDeliveries": lambda s, i: {"since": "2020-01-01T00:00:00Z"},
    # Booking
    "createHold": lambda s, i: {
        "segments": [{"flight_id": s.flight["id"], "booking_class": "M"}],
        "passengers": {"adults": 1, "children": 0, "infants": 0},
    },
    "createOrder": lambda s, i: {
        "hold_id": s.held["id"],
        "passengers": [adult()],
        "contact": {"email": "anna@example.com", "phone": "+4512345678"},
    },
    "lookupOrder": lambda s, i: {
        "record_locator": s.confirmed["record_locator"],
        "family_name": s.confirmed["passengers"][0]["family_name"],
    },
    "payOrder": lambda s, i: {"card": dict(CARD_OK)},
    "assignSeats": lambda s, i: {
        "seats": [{"passenger_id": s.confirmed["passengers"][0]["id"], "flight_id": s.flight["id"], "seat": "10A"}]
    },
    # Inventory (airline staff)
    "createAirport": lambda s, i: {
        "iata": "ARN",
        "name": "Stockholm Arlanda",
        "city": "Stockholm",
        "country": "SE",
        "time_zone": "Europe/Stockholm",
    },
    "createAircraftType": lambda s, i: {**SMALL_JET, "code": "T61", "name": "Test jet, second series"},
    "createFlight": lambda s, i: {
        "carrier": "XB",
        "flight_number": "777",
        "origin": "CPH",
        "destination": "JFK",
        "departure_at": f"{_future(s, 1)}T10:00:00+00:00",
        "arrival_at": f"{_future(s, 1)}T18:00:00+00:00",
        "aircraft": "T60",
        "fares": [{"booking_class": "Y", "cabin": "Y", "amount": 30000, "currency": "EUR", "seat_limit": 60}],
        "overbooking": {"Y": 2},
    },
    "updateBookingClass": lambda s, i: {"amount": 17900, "seat_limit": 20, "is_open": True},
    "importSchedule": lambda s, i: {
        "carrier": "XB",
        "period_start": _future(s, 10),
        "period_end": _future(s, 12),
        "flights": [
            {
                "flight_number": "901",
                "origin": "LHR",
                "destination": "CPH",
                "departure_time": "09:00",
                "arrival_time": "11:55",
                "days_of_week": [1, 2, 3, 4, 5, 6, 7],
                "aircraft": "T60",
                "fares": [{"booking_class": "M", "cabin": "Y", "amount": 15900, "currency": "EUR", "seat_limit": 30}],
            }
        ],
    },
}

# Form bodies (the OAuth2 token endpoint is the only one): not JSON, so outside the JSON sweep.
FORM_BODIES: dict[str, Recipe] = {
    "issueToken": lambda s, i: {"grant_type": "password", "username": i.a_agent.email, "password": PASSWORD},
}


def body_for(operation_id: str, scene: Scene, identities: Identities) -> Any:
    recipe = JSON_BODIES.get(operation_id) or FORM_BODIES.get(operation_id)
    assert recipe is not None, f"{operation_id}: no body recipe in tests/security/recipes.py"
    return recipe(scene, identities)


def path_values(operation_id: str, scene: Scene, identities: Identities) -> dict[str, Any]:
    """Values for every path parameter the document uses, pointing at the scene's own objects."""
    return {
        "order_id": scene.confirmed["id"],
        "flight_id": scene.flight["id"],
        "key_id": str(identities.a_key.id),
        "user_id": str(identities.a_agent.id),
        "endpoint_id": scene.webhook_endpoint["id"],
        "delivery_id": scene.webhook_delivery["id"],
        "iata": "CPH",
        # {code} names a booking class under a flight and an aircraft type under /aircraft-types.
        "code": "M" if operation_id == "updateBookingClass" else "T60",
    }
