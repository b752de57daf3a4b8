"""Domain errors: plain exceptions with a stable machine-readable ``code``.

Domain code raises these; ``skybook.platform.http`` is the one place that maps them to
``application/problem+json`` responses (RFC 9457).
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """Base of every error a caller can cause; ``code`` never changes once published."""

    code: ClassVar[str] = "domain_error"
    status: ClassVar[int] = 400
    title: ClassVar[str] = "Request cannot be processed"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


class NotFound(DomainError):
    code = "not_found"
    status = 404
    title = "Resource not found"


class InvalidRequest(DomainError):
    code = "invalid_request"
    status = 422
    title = "Request is not valid"


class UnknownAirport(DomainError):
    code = "unknown_airport"
    status = 422
    title = "Unknown airport"


class DateInPast(DomainError):
    code = "date_in_past"
    status = 422
    title = "Date is in the past"


class TooManyPassengers(DomainError):
    code = "too_many_passengers"
    status = 422
    title = "Too many passengers"


class SoldOut(DomainError):
    code = "sold_out"
    status = 409
    title = "Not enough seats left"


class BookingClassClosed(DomainError):
    code = "booking_class_closed"
    status = 409
    title = "Booking class is closed"


class FlightNotBookable(DomainError):
    code = "flight_not_bookable"
    status = 409
    title = "Flight cannot be booked"


class InvalidState(DomainError):
    code = "invalid_state"
    status = 409
    title = "Not allowed in the current state"


class HoldExpired(DomainError):
    code = "hold_expired"
    status = 409
    title = "Hold has expired"


class AlreadyPaid(DomainError):
    code = "already_paid"
    status = 409
    title = "Order is already paid"


class PaymentInProgress(DomainError):
    code = "payment_in_progress"
    status = 409
    title = "A payment for this order is in progress"


class PaymentDeclined(DomainError):
    code = "payment_declined"
    status = 402
    title = "Payment declined"


class PaymentProviderError(DomainError):
    code = "payment_provider_error"
    status = 502
    title = "Payment provider failed"


class SeatUnavailable(DomainError):
    code = "seat_unavailable"
    status = 409
    title = "Seat is not available"


class Busy(DomainError):
    code = "busy"
    status = 503
    title = "Resource is busy, retry shortly"


class Conflict(DomainError):
    code = "conflict"
    status = 409
    title = "Conflicting request"


class RateLimited(DomainError):
    code = "rate_limited"
    status = 429
    title = "Too many requests"


class HoldLimitReached(DomainError):
    code = "hold_limit_reached"
    status = 429
    title = "Too many unpaid seats held"


class Unauthenticated(DomainError):
    code = "unauthenticated"
    status = 401
    title = "Authentication required"


class Forbidden(DomainError):
    code = "forbidden"
    status = 403
    title = "Not allowed"
