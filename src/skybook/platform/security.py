"""Who is calling, and what they may see: the principal every route resolves.

Roles, from the operator side to the traveller:

- ``platform_admin`` and ``airline_staff`` operate the deployment: flights, fares, every tenant.
- ``tenant_admin`` and ``agent`` work for one tenant (a travel agency or app) and see its orders.
- ``traveller`` sees only the orders they made.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    """What a user is allowed to do."""

    PLATFORM_ADMIN = "platform_admin"
    AIRLINE_STAFF = "airline_staff"
    TENANT_ADMIN = "tenant_admin"
    AGENT = "agent"
    TRAVELLER = "traveller"


OPERATOR_ROLES = frozenset({Role.PLATFORM_ADMIN, Role.AIRLINE_STAFF})
TENANT_ROLES = frozenset({Role.TENANT_ADMIN, Role.AGENT, Role.TRAVELLER})


class Scope(StrEnum):
    """Scopes an API key or client may be granted."""

    SEARCH = "search"
    BOOKINGS_READ = "bookings:read"
    BOOKINGS_WRITE = "bookings:write"


ALL_SCOPES = frozenset(Scope)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a user or an API key acting for a tenant."""

    id: uuid.UUID
    kind: str  # "user" or "api_key"
    tenant_id: uuid.UUID
    role: Role
    plan: str
    scopes: frozenset[str] = field(default_factory=lambda: ALL_SCOPES)
    email: str | None = None
    # The plan's limits, carried along so a request needs no extra look-up to enforce them.
    rate_limit: int = 600
    tenant_rate_limit: int = 3000
    max_unpaid_seats: int = 50

    @property
    def is_operator(self) -> bool:
        """Airline side: sees every tenant's data."""
        return self.role in OPERATOR_ROLES

    @property
    def tenant_filter(self) -> uuid.UUID | None:
        """The tenant whose data this principal may see; None means every tenant."""
        return None if self.is_operator else self.tenant_id

    @property
    def owner_filter(self) -> uuid.UUID | None:
        """Travellers see only what they created themselves."""
        return self.id if self.role is Role.TRAVELLER else None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes
