"""Base classes for API schemas: strict input, documented output, money, pagination."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 currency code.", examples=["EUR"])]
IataCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="IATA airport code.", examples=["CPH"])]


class StrictInput(BaseModel):
    """Input schema: unknown fields are rejected, never silently ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


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
