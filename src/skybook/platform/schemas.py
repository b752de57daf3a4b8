"""Base classes for API schemas: strict input, documented output, money, pagination."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 currency code.", examples=["EUR"])]
IataCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="IATA airport code.", examples=["CPH"])]


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_date(value: Any) -> Any:
    # Pydantic's lax mode would also read 0 or "1700000000" as a date (seconds since 1970).
    if isinstance(value, dt.date) or (isinstance(value, str) and _ISO_DATE.fullmatch(value)):
        return value
    raise ValueError("a date is written YYYY-MM-DD")


IsoDate = Annotated[dt.date, BeforeValidator(_iso_date)]
"""A calendar date as the document declares it (``format: date``): YYYY-MM-DD and nothing else."""


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False


class StrictInput(BaseModel):
    """Input schema: unknown fields are rejected, never silently ignored; no text holds a NUL character.

    PostgreSQL cannot store or compare a string with NUL in it: refused here it is a 422 on every
    backend instead of a 500 on one.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul_characters(cls, value: Any) -> Any:
        if _has_nul(value):
            raise ValueError("text must not contain NUL characters")
        return value


class Output(BaseModel):
    """Output schema."""

    model_config = ConfigDict(from_attributes=True)


class Money(Output):
    """An amount in integer minor units (cents) of a currency."""

    amount: int = Field(description="Amount in minor units, e.g. 12900 for EUR 129.00.", examples=[12900])
    currency: Currency


T = TypeVar("T")


class PageInfo(Output):
    """Where a page sits in the full result."""

    page: int = Field(description="1-based page number.", examples=[1])
    page_size: int = Field(description="Items per page.", examples=[20])
    total: int = Field(description="Items across all pages.", examples=[42])


class Page(Output, Generic[T]):
    """One page of a list."""

    items: list[T] = Field(description="The items of this page.")
    page_info: PageInfo = Field(description="Position of this page.")


MAX_PAGE_SIZE = 100
