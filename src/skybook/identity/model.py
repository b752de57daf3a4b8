"""Identity rules: e-mail and password policy, who may grant which role."""

from __future__ import annotations

from skybook.platform.errors import DomainError, Forbidden, InvalidRequest, Unauthenticated
from skybook.platform.security import OPERATOR_ROLES, Role

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 128


class InvalidCredentials(DomainError):
    code = "invalid_credentials"
    status = 401
    title = "Invalid credentials"


class TooManyAttempts(DomainError):
    code = "too_many_attempts"
    status = 429
    title = "Too many attempts"


def normalise_email(email: str) -> str:
    """E-mails compare case-insensitively."""
    return email.strip().lower()


def check_password_policy(password: str, *, email: str) -> None:
    """NIST 800-63B style: long enough, not the e-mail, no composition rules."""
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidRequest(f"a password has {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")
    if password.strip().lower() == email.lower() or password.lower() in email.lower():
        raise InvalidRequest("the password must not be the e-mail address")


def roles_grantable_by(role: Role) -> frozenset[Role]:
    """Roles a user of ``role`` may give others (never more than they have)."""
    if role is Role.PLATFORM_ADMIN:
        return frozenset(Role)
    if role is Role.TENANT_ADMIN:
        return frozenset({Role.TENANT_ADMIN, Role.AGENT})
    return frozenset()


def is_operator_role(role: Role) -> bool:
    return role in OPERATOR_ROLES


__all__ = ["Forbidden", "InvalidCredentials", "TooManyAttempts", "Unauthenticated"]
