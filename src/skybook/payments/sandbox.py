"""Built-in sandbox card processor with test card numbers, for development and tests."""

from __future__ import annotations

import hashlib

from skybook.payments.ports import Card, Outcome, ProviderResult

# Test cards, in the spirit of the big processors' sandboxes.
APPROVED_CARDS = frozenset({"4242424242424242", "5555555555554444"})
DECLINED_CARDS = {
    "4000000000000002": "card_declined",
    "4000000000009995": "insufficient_funds",
    "4000000000000069": "expired_card",
}
ERROR_CARDS = frozenset({"4000000000000119"})  # the processor fails (answers 5xx)


class SandboxPaymentProvider:
    """Deterministic in-process provider: the card number decides the outcome.

    Results are remembered per idempotency key, like a real processor's, so a retry after a
    crash returns the first answer instead of charging twice.
    """

    name = "sandbox"

    def __init__(self) -> None:
        self._answers: dict[str, ProviderResult] = {}
        self.calls: list[tuple[str, str]] = []

    def _remember(self, key: str, result: ProviderResult) -> ProviderResult:
        return self._answers.setdefault(key, result)

    @staticmethod
    def _ref(prefix: str, key: str) -> str:
        return f"{prefix}_{hashlib.sha256(key.encode()).hexdigest()[:24]}"

    async def authorize(self, *, amount: int, currency: str, card: Card, idempotency_key: str) -> ProviderResult:
        self.calls.append(("authorize", idempotency_key))
        if idempotency_key in self._answers:
            return self._answers[idempotency_key]
        if card.number in ERROR_CARDS:
            # Errors are not remembered: the processor never processed the call.
            return ProviderResult(Outcome.ERROR, message="processor unavailable")
        if card.number in DECLINED_CARDS:
            return self._remember(
                idempotency_key,
                ProviderResult(Outcome.DECLINED, decline_code=DECLINED_CARDS[card.number]),
            )
        if card.number not in APPROVED_CARDS:
            return self._remember(idempotency_key, ProviderResult(Outcome.DECLINED, decline_code="unknown_test_card"))
        return self._remember(idempotency_key, ProviderResult(Outcome.APPROVED, self._ref("auth", idempotency_key)))

    async def capture(self, *, reference: str, amount: int, idempotency_key: str) -> ProviderResult:
        self.calls.append(("capture", idempotency_key))
        return self._remember(idempotency_key, ProviderResult(Outcome.APPROVED, self._ref("ch", reference)))

    async def void(self, *, reference: str, idempotency_key: str) -> ProviderResult:
        self.calls.append(("void", idempotency_key))
        return self._remember(idempotency_key, ProviderResult(Outcome.APPROVED, self._ref("void", reference)))

    async def refund(self, *, reference: str, amount: int, idempotency_key: str) -> ProviderResult:
        self.calls.append(("refund", idempotency_key))
        return self._remember(idempotency_key, ProviderResult(Outcome.APPROVED, self._ref("re", reference)))


def luhn_valid(number: str) -> bool:
    """Whether a card number passes the Luhn checksum."""
    if not number.isdigit() or not 12 <= len(number) <= 19:
        return False
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0
