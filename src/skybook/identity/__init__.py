"""Identity: tenants, plans, users and roles, access and refresh tokens, API keys, audit log."""

from skybook.identity.authn import Authenticator
from skybook.identity.passwords import Passwords
from skybook.identity.tokens import KeyRing, TokenService

__all__ = ["Authenticator", "KeyRing", "Passwords", "TokenService"]
