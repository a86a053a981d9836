"""Platform administration (role ``admin``): users of every organization, organizations, the
audit log. Every change and every read of other users' data is audited."""

from __future__ import annotations

import structlog
from aiohttp import web

from auth.appkeys import AUDIT, DIRECTORY, REFRESH, SETTINGS, USERS
from auth.guard import require_admin
from auth.handlers_orgs import create_invitation, members_page
from auth.organizations import OrganizationTaken
from auth.schemas import ROLES, OrganizationRequest, OrganizationUpdate, RoleRequest, validate_organization
from auth.users import User
from common.http import ApiError, client_address, json_response, query_int, read_json

__all__ = ["routes"]

routes = web.RouteTableDef()
log = structlog.get_logger(__name__)

MAX_PAGE_SIZE = 200
NO_STORE = {"Cache-Control": "no-store"}


def _not_found() -> ApiError:
    return ApiError(404, "user_not_found", "no such user")


def _target(request: web.Request, admin: User) -> str:
    user_id = request.match_info["user_id"]
    if user_id == admin.user_id:
        raise ApiError(409, "cannot_modify_self", "admins cannot disable, enable or re-role themselves")
    return user_id


def _ip(request: web.Request) -> str:
    return client_address(request, trusted_proxies=request.app[SETTINGS].trusted_proxies)


@routes.get("/admin/users")
async def list_users(request: web.Request) -> web.Response:
    """Every user (``organization_id`` narrows it to one organization)."""
    _, admin = await require_admin(request)
    organization_id = request.query.get("organization_id")
    payload = await members_page(request, organization_id)
    await request.app[AUDIT].record(
        "admin_read_users",
        actor_id=admin.user_id,
        organization_id=admin.organization_id,
        client_ip=_ip(request),
        of_organization=organization_id,
    )
    return json_response(payload, headers=NO_STORE)


@routes.post("/admin/users/{user_id}/disable")
async def disable_user(request: web.Request) -> web.Response:
    """Disable a user: the gateway sees it at once (Redis key), and every access and refresh token
    of the user is revoked (token generation), so enabling the user later revives none of them."""
    _, admin = await require_admin(request)
    user_id = _target(request, admin)
    user = await request.app[USERS].set_disabled(user_id, True)
    if user is None:
        raise _not_found()
    revoked = await request.app[REFRESH].revoke_all(user_id)
    await request.app[AUDIT].record(
        "user_disabled",
        actor_id=admin.user_id,
        organization_id=user.organization_id,
        target_id=user_id,
        client_ip=_ip(request),
    )
    log.info("user_disabled", user_id=user_id, by=admin.user_id, refresh_families_revoked=revoked)
    return json_response(user.public(), headers=NO_STORE)


@routes.post("/admin/users/{user_id}/enable")
async def enable_user(request: web.Request) -> web.Response:
    _, admin = await require_admin(request)
    user_id = _target(request, admin)
    user = await request.app[USERS].set_disabled(user_id, False)
    if user is None:
        raise _not_found()
    await request.app[AUDIT].record(
        "user_enabled",
        actor_id=admin.user_id,
        organization_id=user.organization_id,
        target_id=user_id,
        client_ip=_ip(request),
    )
    log.info("user_enabled", user_id=user_id, by=admin.user_id)
    return json_response(user.public(), headers=NO_STORE)


@routes.post("/admin/users/{user_id}/role")
async def set_role(request: web.Request) -> web.Response:
    """Change a role; new access tokens (login or refresh) carry it, admin checks use it at once."""
    _, admin = await require_admin(request)
    user_id = _target(request, admin)
    body = await read_json(request, RoleRequest)
    if body.role not in ROLES:
        raise ApiError(400, "invalid_role", f"role must be one of: {', '.join(ROLES)}")
    user = await request.app[USERS].set_role(user_id, body.role)
    if user is None:
        raise _not_found()
    await request.app[AUDIT].record(
        "role_changed",
        actor_id=admin.user_id,
        organization_id=user.organization_id,
        target_id=user_id,
        client_ip=_ip(request),
        role=body.role,
    )
    log.info("user_role_changed", user_id=user_id, role=body.role, by=admin.user_id)
    return json_response(user.public(), headers=NO_STORE)


@routes.post("/admin/organizations")
async def create_organization(request: web.Request) -> web.Response:
    _, admin = await require_admin(request)
    body = await read_json(request, OrganizationRequest)
    name = validate_organization(body.name)
    try:
        org = await request.app[DIRECTORY].organizations.create(
            name,
            allowed_domains=[d.lower() for d in body.allowed_domains],
            monthly_token_quota=body.monthly_token_quota,
        )
    except OrganizationTaken:
        raise ApiError(409, "organization_taken", "an organization with this name already exists") from None
    await request.app[AUDIT].record(
        "organization_created",
        actor_id=admin.user_id,
        organization_id=org.organization_id,
        target_id=org.organization_id,
        client_ip=_ip(request),
        name=org.name,
    )
    return json_response(org.public(), status=201, headers=NO_STORE)


@routes.get("/admin/organizations")
async def list_organizations(request: web.Request) -> web.Response:
    await require_admin(request)
    orgs = await request.app[DIRECTORY].organizations.all()
    return json_response({"organizations": [org.public() for org in orgs]}, headers=NO_STORE)


@routes.patch("/admin/organizations/{organization_id}")
async def update_organization(request: web.Request) -> web.Response:
    _, admin = await require_admin(request)
    body = await read_json(request, OrganizationUpdate)
    organization_id = request.match_info["organization_id"]
    org = await request.app[DIRECTORY].organizations.update(
        organization_id,
        allowed_domains=None if body.allowed_domains is None else [d.lower() for d in body.allowed_domains],
        monthly_token_quota=body.monthly_token_quota,
        clear_quota=body.clear_quota,
    )
    if org is None:
        raise ApiError(404, "organization_not_found", "no such organization")
    await request.app[AUDIT].record(
        "organization_updated",
        actor_id=admin.user_id,
        organization_id=organization_id,
        target_id=organization_id,
        client_ip=_ip(request),
        allowed_domains=list(org.allowed_domains),
        monthly_token_quota=org.monthly_token_quota,
    )
    return json_response(org.public(), headers=NO_STORE)


@routes.post("/admin/organizations/{organization_id}/invitations")
async def invite_to_organization(request: web.Request) -> web.Response:
    """A platform admin invites into any organization (e.g. its first org admin)."""
    _, admin = await require_admin(request)
    organization_id = request.match_info["organization_id"]
    if await request.app[DIRECTORY].organizations.get(organization_id) is None:
        raise ApiError(404, "organization_not_found", "no such organization")
    return await create_invitation(request, admin, organization_id)


@routes.get("/admin/audit")
async def audit_log(request: web.Request) -> web.Response:
    """The audit log, oldest first; ``after`` is the previous page's ``next``; filters:
    ``organization_id``, ``action``, ``actor_id``. Read-only: no endpoint edits it."""
    await require_admin(request)
    limit = query_int(request, "limit", 100, minimum=1, maximum=1000)
    after = query_int(request, "after", 0, minimum=0, maximum=2**62)
    entries, next_cursor = await request.app[AUDIT].page(
        after=after,
        limit=limit,
        organization_id=request.query.get("organization_id"),
        action=request.query.get("action"),
        actor_id=request.query.get("actor_id"),
    )
    return json_response({"entries": entries, "next": next_cursor}, headers=NO_STORE)
