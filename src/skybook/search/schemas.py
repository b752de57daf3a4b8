"""Search request and offer schemas."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from pydantic import Field

from skybook.platform.schemas import MAX_PAGE_SIZE, IataCode, IsoDate, Money, Output, Page, StrictInput


class SearchQuery(StrictInput):
    """One-way or round-trip search (give ``return_date`` for a round trip)."""

    origin: IataCode
    destination: IataCode
    departure_date: IsoDate = Field(description="Local departure date at the origin.")
    return_date: IsoDate | None = Field(None, description="Local departure date of the return flight.")
    adults: int = Field(1, ge=0, le=9, description="Passengers aged 12 or more.")
    children: int = Field(0, ge=0, le=9, description="Passengers aged 2 to 11.")
    infants: int = Field(0, ge=0, le=9, description="Lap infants under 2.")
    cabin: Literal["F", "J", "W", "Y"] = Field("Y", description="Cabin to search.")
    page: int = Field(1, ge=1, le=10_000, description="1-based page number.")
    page_size: int = Field(20, ge=1, le=MAX_PAGE_SIZE, description="Offers per page.")


class OfferSegment(Output):
    """A flight of an offer and the booking class it would sell."""

    flight_id: uuid.UUID = Field(description="Flight id, used to hold.")
    designator: str = Field(description="Carrier and flight number.", examples=["XB101"])
    origin: IataCode
    destination: IataCode
    departure_at: dt.datetime = Field(description="Departure in UTC.")
    arrival_at: dt.datetime = Field(description="Arrival in UTC.")
    departure_local: dt.datetime = Field(description="Departure in the origin's local time.")
    arrival_local: dt.datetime = Field(description="Arrival in the destination's local time.")
    aircraft: str = Field(description="Aircraft type code.")
    cabin: str = Field(description="Cabin code.")
    booking_class: str = Field(description="Cheapest open booking class with room for the party.")
    fare: Money = Field(description="Adult fare of this segment.")
    seats_left: int = Field(description="Seats this booking class can still sell.")


class Offer(Output):
    """A priced itinerary for the whole party."""

    segments: list[OfferSegment] = Field(description="Flights in travel order.")
    total: Money = Field(description="Price for all passengers and segments.")
    seats_left: int = Field(description="Fewest seats left across the segments.")


class OfferPage(Page[Offer]):
    """A page of offers, sorted by departure."""
