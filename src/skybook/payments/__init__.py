"""Payments: the provider port, the sandbox provider, payment and refund records."""

from skybook.payments.ports import Card, Outcome, PaymentProvider, ProviderResult
from skybook.payments.sandbox import SandboxPaymentProvider, luhn_valid
from skybook.payments.tables import payments, refunds

__all__ = [
    "Card",
    "Outcome",
    "PaymentProvider",
    "ProviderResult",
    "SandboxPaymentProvider",
    "luhn_valid",
    "payments",
    "refunds",
]
