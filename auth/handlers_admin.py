"""User administration (admin role): list users, disable/enable them, change their role."""

from __future__ import annotations

import structlog
from aiohttp import web

from auth.appkeys import REFRESH, SETTINGS, USERS
from auth.guard import require_admin
from auth.schemas import ROLES, RoleRequest
from auth.users import User
from common.http import ApiError, json_response, query_int, read_json

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


@routes.get("/admin/users")
async def list_users(request: web.Request) -> web.Response:
    await require_admin(request)
    limit = query_int(
        request, "limit", request.app[SETTINGS].admin_page_size, minimum=1, maximum=MAX_PAGE_SIZE
    )
    try:
        users, next_cursor = await request.app[USERS].page(request.query.get("cursor"), limit)
    except ValueError:
        raise ApiError(400, "invalid_cursor", "cursor is malformed; use the 'next' value") from None
    payload = {"users": [user.public() for user in users], "next": next_cursor}
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
    log.info("user_disabled", user_id=user_id, by=admin.user_id, refresh_families_revoked=revoked)
    return json_response(user.public(), headers=NO_STORE)


@routes.post("/admin/users/{user_id}/enable")
async def enable_user(request: web.Request) -> web.Response:
    _, admin = await require_admin(request)
    user_id = _target(request, admin)
    user = await request.app[USERS].set_disabled(user_id, False)
    if user is None:
        raise _not_found()
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
    log.info("user_role_changed", user_id=user_id, role=body.role, by=admin.user_id)
    return json_response(user.public(), headers=NO_STORE)
