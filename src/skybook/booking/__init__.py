"""Booking: holds, orders (PNRs), passengers, payment and ticketing, seats, cancellation."""

from skybook.booking.model import OrderStatus, PartySize, PassengerType

__all__ = ["OrderStatus", "PartySize", "PassengerType"]
