"""Request and response schemas of the identity API."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from pydantic import EmailStr, Field

from skybook.platform.schemas import Output, Page, StrictInput

RoleName = Literal["platform_admin", "airline_staff", "tenant_admin", "agent", "traveller"]
ScopeName = Literal["search", "bookings:read", "bookings:write"]
Password = Field(min_length=12, max_length=128, description="12 to 128 characters.", examples=["correct horse battery"])


class SignUp(StrictInput):
    """A traveller creates an account."""

    email: EmailStr = Field(description="Log-in e-mail.", examples=["ada@example.com"])
    password: str = Password

    model_config = {
        "json_schema_extra": {"examples": [{"email": "ada@example.com", "password": "correct horse battery"}]}
    }


class TokenRequest(StrictInput):
    """OAuth2 token request, form-encoded (``application/x-www-form-urlencoded``)."""

    grant_type: Literal["password", "refresh_token", "client_credentials"] = Field(description="OAuth2 grant type.")
    username: str | None = Field(None, max_length=254, description="E-mail (password grant).")
    password: str | None = Field(None, max_length=128, description="Password (password grant).")
    refresh_token: str | None = Field(None, max_length=200, description="Refresh token (refresh_token grant).")
    client_id: str | None = Field(None, max_length=64, description="API key prefix, sbk_... (client credentials).")
    client_secret: str | None = Field(None, max_length=200, description="The rest of the API key (client credentials).")
    scope: str | None = Field(None, max_length=200, description="Ignored: a token carries the scopes of its subject.")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"grant_type": "password", "username": "agent@skybook.example.com", "password": "skybook-demo-password"}
            ]
        }
    }


class TokenResponse(Output):
    """OAuth2 token response."""

    access_token: str = Field(description="JWT access token; send as 'Authorization: Bearer <token>'.")
    token_type: Literal["bearer"] = Field("bearer", description="Always 'bearer'.")
    expires_in: int = Field(description="Seconds until the access token expires.", examples=[900])
    refresh_token: str | None = Field(None, description="Single-use refresh token (password and refresh grants).")


class PasswordChange(StrictInput):
    """Change the password; every session of the user ends."""

    current_password: str = Field(min_length=1, max_length=128, description="The password in use now.")
    new_password: str = Password

    model_config = {
        "json_schema_extra": {
            "examples": [{"current_password": "correct horse battery", "new_password": "staple the battery horse"}]
        }
    }


class InvitationAccept(StrictInput):
    """Activate an invited account by choosing a password."""

    token: str = Field(min_length=10, max_length=200, description="The invitation token.")
    password: str = Password

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "token": "inv_0123456789ab_0000000000000000000000000000000000000000000000000000000000000000",
                    "password": "correct horse battery",
                }
            ]
        }
    }


class PrincipalRead(Output):
    """Who the caller is."""

    id: uuid.UUID = Field(description="User or API key id.")
    kind: Literal["user", "api_key"] = Field(description="A user or an API key.")
    tenant_id: uuid.UUID = Field(description="The caller's tenant.")
    role: RoleName = Field(description="The caller's role.")
    plan: str = Field(description="The tenant's plan.")
    scopes: list[str] = Field(description="What the caller may do.")
    email: str | None = Field(description="E-mail of a user.")


class TenantCreate(StrictInput):
    """Onboard a travel agency or app, with an invitation for its first admin."""

    name: str = Field(min_length=2, max_length=120, description="Tenant name.", examples=["Nordic Travel ApS"])
    plan: str = Field("standard", pattern=r"^[a-z0-9_-]{1,32}$", description="Plan code.", examples=["standard"])
    admin_email: EmailStr = Field(description="E-mail of the tenant's first admin.")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"name": "Nordic Travel ApS", "plan": "standard", "admin_email": "admin@nordic-travel.example.com"}
            ]
        }
    }


class TenantCreated(Output):
    """A new tenant and the invitation for its admin (shown once)."""

    id: uuid.UUID = Field(description="Tenant id.")
    name: str = Field(description="Tenant name.")
    plan: str = Field(description="Plan code.")
    admin_user_id: uuid.UUID = Field(description="The invited admin.")
    invitation_token: str = Field(description="Give this to the admin; it is shown only now.")


class UserInvite(StrictInput):
    """Invite a colleague into your tenant."""

    email: EmailStr = Field(description="The colleague's e-mail.")
    role: Literal["tenant_admin", "agent", "airline_staff", "platform_admin"] = Field(
        description="Role to grant (never more than your own)."
    )

    model_config = {"json_schema_extra": {"examples": [{"email": "agent@nordic-travel.example.com", "role": "agent"}]}}


class Invitation(Output):
    """An invited user and the invitation token (shown once)."""

    user_id: uuid.UUID = Field(description="The invited user.")
    invitation_token: str = Field(description="Give this to the user; it is shown only now.")


class RoleChange(StrictInput):
    """Change a colleague's role."""

    role: Literal["tenant_admin", "agent", "airline_staff", "platform_admin"] = Field(description="The new role.")

    model_config = {"json_schema_extra": {"examples": [{"role": "tenant_admin"}]}}


class UserRead(Output):
    """A user of a tenant."""

    id: uuid.UUID = Field(description="User id.")
    tenant_id: uuid.UUID = Field(description="Tenant.")
    email: str = Field(description="Log-in e-mail.")
    role: RoleName = Field(description="Role.")
    status: Literal["active", "invited", "disabled"] = Field(description="Account status.")
    created_at: dt.datetime = Field(description="When the account was created.")


class UserPage(Page[UserRead]):
    """A page of users."""


class ApiKeyCreate(StrictInput):
    """Create an API key for a machine client."""

    name: str = Field(min_length=1, max_length=80, description="What the key is for.", examples=["booking engine"])
    scopes: list[ScopeName] = Field(
        min_length=1,
        max_length=3,
        description="What the key may do.",
        examples=[["search", "bookings:read", "bookings:write"]],
    )

    model_config = {
        "json_schema_extra": {
            "examples": [{"name": "booking engine", "scopes": ["search", "bookings:read", "bookings:write"]}]
        }
    }


class ApiKeyRead(Output):
    """An API key as listed (never with its secret)."""

    id: uuid.UUID = Field(description="Key id.")
    name: str = Field(description="What the key is for.")
    prefix: str = Field(description="Visible prefix identifying the key.", examples=["sbk_3f9a1c0b2d4e"])
    scopes: list[str] = Field(description="What the key may do.")
    created_at: dt.datetime = Field(description="When it was created.")
    last_used_at: dt.datetime | None = Field(description="Last authenticated use (to the minute).")
    revoked_at: dt.datetime | None = Field(description="When it was revoked.")


class ApiKeyCreated(ApiKeyRead):
    """A new API key; ``key`` is shown only in this answer and stored only as a hash."""

    key: str = Field(
        description="The secret key. For client credentials: client_id is the prefix (sbk_...), client_secret the rest."
    )


class ApiKeyPage(Page[ApiKeyRead]):
    """A page of API keys."""


class AuditEventRead(Output):
    """A security event."""

    id: int = Field(description="Sequence number.")
    tenant_id: uuid.UUID | None = Field(description="Tenant concerned.")
    actor_id: uuid.UUID | None = Field(description="Who did it.")
    action: str = Field(description="What happened.", examples=["login.failed"])
    target: str | None = Field(description="What it was done to.")
    ip: str | None = Field(description="Client address.")
    occurred_at: dt.datetime = Field(description="When.")
    details: dict[str, object] = Field(description="More about it.")


class AuditEventPage(Page[AuditEventRead]):
    """A page of audit events, newest first."""
