"""HTTP routes of the identity context: log-in (OAuth2 token endpoint), users, tenants, API keys, audit."""

from __future__ import annotations

import uuid
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Form, Path, Request, Response, status

from skybook.identity import handlers
from skybook.identity.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPage,
    ApiKeyRead,
    AuditEventPage,
    AuditEventRead,
    Invitation,
    InvitationAccept,
    PasswordChange,
    PrincipalRead,
    RoleChange,
    SignUp,
    TenantCreate,
    TenantCreated,
    TokenRequest,
    TokenResponse,
    UserInvite,
    UserPage,
    UserRead,
)
from skybook.identity.tables import api_keys, audit_log, users
from skybook.platform.deps import ContainerDep, CurrentPrincipal, ReadConn, client_ip, ip_rate_limited, require_roles
from skybook.platform.errors import InvalidRequest, NotFound
from skybook.platform.http import Paging, error_responses
from skybook.platform.security import Principal, Role

# Routes that work without a principal: sign-up, the token endpoint, accepting an invitation.
public_router = APIRouter(prefix="/v1/auth", tags=["Identity"], dependencies=[Depends(ip_rate_limited)])
# Routes for authenticated callers (the app adds the principal and rate-limit dependencies).
router = APIRouter(prefix="/v1", tags=["Identity"])

TenantAdmin = Annotated[Principal, Depends(require_roles(Role.TENANT_ADMIN, Role.PLATFORM_ADMIN))]
PlatformAdmin = Annotated[Principal, Depends(require_roles(Role.PLATFORM_ADMIN))]
AUTH_ERRORS = (400, 401, 413, 415, 422, 429)


def _tokens(pair: handlers.TokenPair, container: ContainerDep, response: Response) -> TokenResponse:
    # Tokens must never sit in a shared cache.
    response.headers["Cache-Control"] = "no-store"
    expires_in = max(0, int((pair.expires_at - container.clock.now()).total_seconds()))
    return TokenResponse(access_token=pair.access_token, expires_in=expires_in, refresh_token=pair.refresh_token)


@public_router.post(
    "/signup",
    operation_id="signUp",
    summary="Create a traveller account",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    responses=error_responses(400, 409, 413, 415, 422, 429),
)
async def sign_up(body: SignUp, request: Request, container: ContainerDep) -> UserRead:
    """A traveller creates an account and can then log in at the token endpoint."""
    user_id = await handlers.signup_traveller(str(body.email), body.password, container, ip=client_ip(request))
    async with container.engine.connect() as conn:
        row = (await conn.execute(sa.select(users).where(users.c.id == user_id))).one()
    return UserRead.model_validate(row)


@public_router.post(
    "/token",
    operation_id="issueToken",
    summary="Log in (OAuth2 token endpoint)",
    response_model=TokenResponse,
    responses=error_responses(*AUTH_ERRORS, 503),
)
async def issue_token(
    form: Annotated[TokenRequest, Form()],
    request: Request,
    response: Response,
    container: ContainerDep,
) -> TokenResponse:
    """OAuth2 token endpoint.

    * ``password``: e-mail and password, **for first-party clients only** (the Skybook web UI and
      this page's Authorize button); third parties use API keys or client credentials.
    * ``refresh_token``: rotates; a refresh token works once, and presenting a spent one again
      revokes its whole family.
    * ``client_credentials``: a machine client exchanges its API key for an access token.
    """
    ip = client_ip(request)
    grant_type, username, password = form.grant_type, form.username, form.password
    refresh_token, client_id, client_secret = form.refresh_token, form.client_id, form.client_secret
    if grant_type == "password":
        if not username or not password:
            raise InvalidRequest("the password grant needs username and password")
        pair = await handlers.login(username, password, container, ip=ip)
    elif grant_type == "refresh_token":
        if not refresh_token:
            raise InvalidRequest("the refresh_token grant needs refresh_token")
        pair = await handlers.refresh(refresh_token, container, ip=ip)
    else:
        if not client_id or not client_secret:
            raise InvalidRequest("the client_credentials grant needs client_id and client_secret")
        pair = await handlers.client_credentials(client_id, client_secret, container, ip=ip)
    return _tokens(pair, container, response)


@public_router.post(
    "/invitations/accept",
    operation_id="acceptInvitation",
    summary="Accept an invitation",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(*AUTH_ERRORS),
)
async def accept_invitation(body: InvitationAccept, request: Request, container: ContainerDep) -> None:
    """Choose a password for an invited account, which becomes active."""
    await handlers.accept_invitation(body.token, body.password, container, ip=client_ip(request))


@router.post(
    "/auth/logout",
    operation_id="logOut",
    summary="Log out everywhere",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(400, 401, 403, 413, 429),
)
async def log_out(request: Request, principal: CurrentPrincipal, container: ContainerDep) -> None:
    """End every session of the user: refresh tokens revoked, access tokens refused within a second."""
    await handlers.logout(principal, container, ip=client_ip(request))


@router.post(
    "/auth/password",
    operation_id="changePassword",
    summary="Change password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(*AUTH_ERRORS),
)
async def change_password(
    body: PasswordChange, request: Request, principal: CurrentPrincipal, container: ContainerDep
) -> None:
    """Change the password; every existing session ends."""
    await handlers.change_password(
        principal, body.current_password, body.new_password, container, ip=client_ip(request)
    )


@router.get(
    "/me", operation_id="getMe", summary="Who am I", response_model=PrincipalRead, responses=error_responses(401, 429)
)
async def me(principal: CurrentPrincipal) -> PrincipalRead:
    """The authenticated caller: user or API key, tenant, role, plan and scopes."""
    return PrincipalRead(
        id=principal.id,
        kind=principal.kind,
        tenant_id=principal.tenant_id,
        role=principal.role.value,
        plan=principal.plan,
        scopes=sorted(principal.scopes),
        email=principal.email,
    )


@router.post(
    "/tenants",
    operation_id="createTenant",
    summary="Onboard a tenant",
    status_code=status.HTTP_201_CREATED,
    response_model=TenantCreated,
    responses=error_responses(400, 401, 403, 409, 413, 415, 422, 429),
)
async def create_tenant(
    body: TenantCreate, request: Request, principal: PlatformAdmin, container: ContainerDep
) -> TenantCreated:
    """Create a travel agency or app tenant and invite its first admin (platform admins)."""
    tenant_id, user_id, token = await handlers.create_tenant(
        body.name, body.plan, str(body.admin_email), principal, container, ip=client_ip(request)
    )
    return TenantCreated(id=tenant_id, name=body.name, plan=body.plan, admin_user_id=user_id, invitation_token=token)


@router.get(
    "/users",
    operation_id="listUsers",
    summary="List users",
    response_model=UserPage,
    responses=error_responses(401, 403, 422, 429),
)
async def list_users(principal: TenantAdmin, conn: ReadConn, paging: Annotated[Paging, Depends()]) -> UserPage:
    """Users of your tenant (platform admins: of every tenant)."""
    where = [] if principal.tenant_filter is None else [users.c.tenant_id == principal.tenant_filter]
    rows, page_info = await paging.fetch(conn, users, where=where, order_by=[users.c.created_at, users.c.id])
    return UserPage(items=[UserRead.model_validate(r) for r in rows], page_info=page_info)


@router.post(
    "/users",
    operation_id="inviteUser",
    summary="Invite a user",
    status_code=status.HTTP_201_CREATED,
    response_model=Invitation,
    responses=error_responses(400, 401, 403, 409, 413, 415, 422, 429),
)
async def invite_user(
    body: UserInvite, request: Request, principal: TenantAdmin, container: ContainerDep
) -> Invitation:
    """Invite a colleague into your tenant with a role no higher than yours; the token is shown once."""
    user_id, token = await handlers.invite_user(
        str(body.email), Role(body.role), principal, container, ip=client_ip(request)
    )
    return Invitation(user_id=user_id, invitation_token=token)


@router.patch(
    "/users/{user_id}",
    operation_id="changeUserRole",
    summary="Change a user's role",
    response_model=UserRead,
    responses=error_responses(400, 401, 403, 404, 413, 415, 422, 429),
)
async def change_user_role(
    user_id: Annotated[uuid.UUID, Path(description="User id.")],
    body: RoleChange,
    request: Request,
    principal: TenantAdmin,
    container: ContainerDep,
) -> UserRead:
    """Change a colleague's role; their sessions end so the new role applies at once."""
    await handlers.change_role(user_id, Role(body.role), principal, container, ip=client_ip(request))
    async with container.engine.connect() as conn:
        row = (await conn.execute(sa.select(users).where(users.c.id == user_id))).one()
    return UserRead.model_validate(row)


def _key_read(row: sa.Row) -> ApiKeyRead:  # type: ignore[type-arg]
    return ApiKeyRead(
        id=row.id,
        name=row.name,
        prefix=f"sbk_{row.prefix}",
        scopes=list(row.scopes),
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


@router.post(
    "/api-keys",
    operation_id="createApiKey",
    summary="Create an API key",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    responses=error_responses(400, 401, 403, 413, 415, 422, 429),
)
async def create_api_key(
    body: ApiKeyCreate, request: Request, principal: TenantAdmin, response: Response, container: ContainerDep
) -> ApiKeyCreated:
    """Create a scoped API key for your tenant; the secret is in this answer only."""
    key_id, credential, _ = await handlers.create_api_key(
        body.name, frozenset(body.scopes), principal, container, ip=client_ip(request)
    )
    response.headers["Cache-Control"] = "no-store"
    async with container.engine.connect() as conn:
        row = (await conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).one()
    return ApiKeyCreated(**_key_read(row).model_dump(), key=credential)


@router.get(
    "/api-keys",
    operation_id="listApiKeys",
    summary="List API keys",
    response_model=ApiKeyPage,
    responses=error_responses(401, 403, 422, 429),
)
async def list_api_keys(principal: TenantAdmin, conn: ReadConn, paging: Annotated[Paging, Depends()]) -> ApiKeyPage:
    """API keys of your tenant, with last use and revocation (never their secrets)."""
    where = [] if principal.tenant_filter is None else [api_keys.c.tenant_id == principal.tenant_filter]
    rows, page_info = await paging.fetch(conn, api_keys, where=where, order_by=[api_keys.c.created_at, api_keys.c.id])
    return ApiKeyPage(items=[_key_read(r) for r in rows], page_info=page_info)


@router.post(
    "/api-keys/{key_id}/revoke",
    operation_id="revokeApiKey",
    summary="Revoke an API key",
    response_model=ApiKeyRead,
    responses=error_responses(400, 401, 403, 404, 413, 422, 429),
)
async def revoke_api_key(
    key_id: Annotated[uuid.UUID, Path(description="API key id.")],
    request: Request,
    principal: TenantAdmin,
    container: ContainerDep,
) -> ApiKeyRead:
    """Revoke a key; it stops working everywhere within a second."""
    await handlers.revoke_api_key(key_id, principal, container, ip=client_ip(request))
    async with container.engine.connect() as conn:
        row = (await conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).first()
    if row is None:  # pragma: no cover - revoke_api_key checked it exists
        raise NotFound(f"API key {key_id} does not exist")
    return _key_read(row)


@router.get(
    "/audit-events",
    operation_id="listAuditEvents",
    summary="Read the audit log",
    response_model=AuditEventPage,
    responses=error_responses(401, 403, 422, 429),
)
async def list_audit_events(
    principal: TenantAdmin, conn: ReadConn, paging: Annotated[Paging, Depends()]
) -> AuditEventPage:
    """Security events of your tenant, newest first (platform admins: every tenant)."""
    where = [] if principal.tenant_filter is None else [audit_log.c.tenant_id == principal.tenant_filter]
    rows, page_info = await paging.fetch(conn, audit_log, where=where, order_by=[audit_log.c.id.desc()])
    return AuditEventPage(items=[AuditEventRead.model_validate(r) for r in rows], page_info=page_info)
