"""Inventory: airports, aircraft seat maps, dated flights, cabins, booking classes and seat counts."""

from skybook.inventory.model import Seat, SeatMap
from skybook.inventory.repository import get_seat_map
from skybook.inventory.seats import (
    SeatLine,
    TakenSeats,
    explain_refusal,
    release_held,
    release_sold,
    sell_held,
    take_ctes,
    take_seats,
    taken_from_row,
)
from skybook.inventory.tables import airports, booking_classes, flight_cabins, flights

__all__ = [
    "Seat",
    "SeatLine",
    "SeatMap",
    "TakenSeats",
    "airports",
    "booking_classes",
    "explain_refusal",
    "flight_cabins",
    "flights",
    "get_seat_map",
    "release_held",
    "release_sold",
    "sell_held",
    "take_ctes",
    "take_seats",
    "taken_from_row",
]
