"""The payment provider port: what booking needs from a card processor."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Card:
    """Card details; never stored, only the brand and last four digits are kept."""

    number: str
    exp_month: int
    exp_year: int
    cvc: str
    holder: str

    @property
    def last4(self) -> str:
        return self.number[-4:]


class Outcome(StrEnum):
    """How a provider call ended."""

    APPROVED = "approved"
    DECLINED = "declined"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class ProviderResult:
    """A provider's answer; ``reference`` identifies the charge or refund at the provider."""

    outcome: Outcome
    reference: str | None = None
    decline_code: str | None = None
    message: str | None = None


class PaymentProvider(Protocol):
    """A card processor. Every call takes an idempotency key so a retried call charges once."""

    name: str

    async def authorize(self, *, amount: int, currency: str, card: Card, idempotency_key: str) -> ProviderResult:
        """Reserve the amount on the card."""
        ...

    async def capture(self, *, reference: str, amount: int, idempotency_key: str) -> ProviderResult:
        """Collect an authorised amount."""
        ...

    async def void(self, *, reference: str, idempotency_key: str) -> ProviderResult:
        """Cancel a capture on its day of issue, before settlement."""
        ...

    async def refund(self, *, reference: str, amount: int, idempotency_key: str) -> ProviderResult:
        """Return money from a settled capture."""
        ...
