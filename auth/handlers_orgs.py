"""Organization administration (``org_admin``, or a platform admin in its own organization):
members, invitations and service accounts of the caller's organization, never another's (a user
of another organization is 404, as if it did not exist)."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from auth.accounts import create_service_account
from auth.appkeys import AUDIT, DIRECTORY, REFRESH, SETTINGS, USERS
from auth.guard import current_user, require_org_admin
from auth.schemas import ORG_ROLES, InvitationRequest, RoleRequest, ServiceAccountRequest, normalize_email
from auth.users import User
from common.http import ApiError, client_address, json_response, query_int, read_json

__all__ = ["create_invitation", "members_page", "routes"]

routes = web.RouteTableDef()
log = structlog.get_logger(__name__)

MAX_PAGE_SIZE = 200
NO_STORE = {"Cache-Control": "no-store"}


def _ip(request: web.Request) -> str:
    return client_address(request, trusted_proxies=request.app[SETTINGS].trusted_proxies)


async def members_page(request: web.Request, organization_id: str | None) -> dict[str, Any]:
    limit = query_int(
        request, "limit", request.app[SETTINGS].admin_page_size, minimum=1, maximum=MAX_PAGE_SIZE
    )
    try:
        users, next_cursor = await request.app[USERS].page(
            request.query.get("cursor"), limit, organization_id=organization_id
        )
    except ValueError:
        raise ApiError(400, "invalid_cursor", "cursor is malformed; use the 'next' value") from None
    return {"users": [user.public() for user in users], "next": next_cursor}


async def create_invitation(request: web.Request, actor: User, organization_id: str) -> web.Response:
    body = await read_json(request, InvitationRequest)
    if body.role not in ORG_ROLES:
        raise ApiError(400, "invalid_role", f"role must be one of: {', '.join(ORG_ROLES)}")
    email = normalize_email(body.email) if body.email else None
    invitation, token = await request.app[DIRECTORY].invitations.create(
        organization_id=organization_id,
        role=body.role,
        email=email,
        created_by=actor.user_id,
        ttl=request.app[SETTINGS].invitation_ttl,
    )
    await request.app[AUDIT].record(
        "invitation_created",
        actor_id=actor.user_id,
        organization_id=organization_id,
        target_id=invitation.invitation_id,
        client_ip=_ip(request),
        role=body.role,
        email=email,
    )
    payload = {**invitation.public(), "invitation_token": token}
    return json_response(payload, status=201, headers=NO_STORE)


async def _member(request: web.Request, admin: User) -> User:
    """The path's user when it is in the admin's organization; 404 otherwise (no existence leak)."""
    user = await request.app[USERS].get(request.match_info["user_id"])
    if user is None or user.organization_id != admin.organization_id:
        raise ApiError(404, "user_not_found", "no such user in your organization")
    if user.user_id == admin.user_id:
        raise ApiError(409, "cannot_modify_self", "admins cannot disable, remove or re-role themselves")
    if user.role == "admin" and admin.role != "admin":
        raise ApiError(403, "forbidden", "a platform admin is managed by platform admins")
    return user


@routes.get("/org")
async def my_organization(request: web.Request) -> web.Response:
    _, user = await current_user(request)
    org = await request.app[DIRECTORY].organizations.get(user.organization_id)
    if org is None:  # pragma: no cover - a user always has an organization (foreign key)
        raise ApiError(404, "organization_not_found", "no such organization")
    return json_response(org.public(), headers=NO_STORE)


@routes.get("/org/members")
async def list_members(request: web.Request) -> web.Response:
    _, admin = await require_org_admin(request)
    return json_response(await members_page(request, admin.organization_id), headers=NO_STORE)


@routes.post("/org/invitations")
async def invite(request: web.Request) -> web.Response:
    """A single-use invitation into the caller's organization (token shown once)."""
    _, admin = await require_org_admin(request)
    return await create_invitation(request, admin, admin.organization_id)


@routes.get("/org/invitations")
async def list_invitations(request: web.Request) -> web.Response:
    _, admin = await require_org_admin(request)
    invitations = await request.app[DIRECTORY].invitations.of_organization(admin.organization_id)
    return json_response({"invitations": [inv.public() for inv in invitations]}, headers=NO_STORE)


@routes.post("/org/members/{user_id}/disable")
async def disable_member(request: web.Request) -> web.Response:
    _, admin = await require_org_admin(request)
    member = await _member(request, admin)
    user = await request.app[USERS].set_disabled(member.user_id, True)
    if user is None:
        raise ApiError(404, "user_not_found", "no such user in your organization")
    await request.app[REFRESH].revoke_all(member.user_id)
    await request.app[AUDIT].record(
        "user_disabled",
        actor_id=admin.user_id,
        organization_id=admin.organization_id,
        target_id=member.user_id,
        client_ip=_ip(request),
    )
    return json_response(user.public(), headers=NO_STORE)


@routes.post("/org/members/{user_id}/enable")
async def enable_member(request: web.Request) -> web.Response:
    _, admin = await require_org_admin(request)
    member = await _member(request, admin)
    user = await request.app[USERS].set_disabled(member.user_id, False)
    if user is None:
        raise ApiError(404, "user_not_found", "no such user in your organization")
    await request.app[AUDIT].record(
        "user_enabled",
        actor_id=admin.user_id,
        organization_id=admin.organization_id,
        target_id=member.user_id,
        client_ip=_ip(request),
    )
    return json_response(user.public(), headers=NO_STORE)


@routes.post("/org/members/{user_id}/role")
async def set_member_role(request: web.Request) -> web.Response:
    _, admin = await require_org_admin(request)
    member = await _member(request, admin)
    body = await read_json(request, RoleRequest)
    if body.role not in ORG_ROLES:
        raise ApiError(400, "invalid_role", f"role must be one of: {', '.join(ORG_ROLES)}")
    user = await request.app[USERS].set_role(member.user_id, body.role)
    if user is None:
        raise ApiError(404, "user_not_found", "no such user in your organization")
    await request.app[AUDIT].record(
        "role_changed",
        actor_id=admin.user_id,
        organization_id=admin.organization_id,
        target_id=member.user_id,
        client_ip=_ip(request),
        role=body.role,
    )
    return json_response(user.public(), headers=NO_STORE)


@routes.delete("/org/members/{user_id}")
async def remove_member(request: web.Request) -> web.Response:
    """Remove a member: the account and its API keys are deleted, its tokens die at once."""
    _, admin = await require_org_admin(request)
    member = await _member(request, admin)
    if not await request.app[USERS].remove(member.user_id):
        raise ApiError(404, "user_not_found", "no such user in your organization")
    await request.app[REFRESH].revoke_all(member.user_id)
    await request.app[AUDIT].record(
        "user_removed",
        actor_id=admin.user_id,
        organization_id=admin.organization_id,
        target_id=member.user_id,
        client_ip=_ip(request),
        username=member.username,
    )
    return web.Response(status=204, headers=NO_STORE)


@routes.post("/org/service-accounts")
async def create_service(request: web.Request) -> web.Response:
    """A service account of the caller's organization (no password: give it API keys)."""
    _, admin = await require_org_admin(request)
    body = await read_json(request, ServiceAccountRequest)
    account = await create_service_account(
        request.app[DIRECTORY], name=body.name, organization_id=admin.organization_id
    )
    await request.app[AUDIT].record(
        "service_account_created",
        actor_id=admin.user_id,
        organization_id=admin.organization_id,
        target_id=account.user_id,
        client_ip=_ip(request),
        name=account.username,
    )
    return json_response(account.public(), status=201, headers=NO_STORE)
