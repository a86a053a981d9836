"""Bearer-token checks for the endpoints that need a caller: ``/me``, ``/logout``, ``/admin/*``."""

from __future__ import annotations

from aiohttp import web

from auth.appkeys import METRICS, REVOCATION, TOKENS, USERS
from auth.tokens import AccessClaims, TokenError
from auth.users import User
from common.http import ApiError
from common.revocation import DISABLED, REVOKED

__all__ = ["authenticate", "current_user", "require_admin", "require_org_admin"]

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="enterprise-chat"'}
_INVALID_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="enterprise-chat", error="invalid_token"'}


def _reject(request: web.Request, status: int, code: str, message: str) -> ApiError:
    request.app[METRICS].failures.labels(reason=code).inc()
    headers = None
    if status == 401:
        headers = _CHALLENGE if code == "missing_token" else _INVALID_CHALLENGE
    return ApiError(status, code, message, headers=headers)


async def authenticate(request: web.Request) -> AccessClaims:
    """Verify the bearer token, then that it is still honoured: its user is not disabled and
    neither the token, nor its login (``sid``), nor every token of its user was revoked (the same
    rule, in the same script, as the gateway's admission: common/revocation.py)."""
    header = request.headers.get("Authorization", "")
    if not header:
        raise _reject(request, 401, "missing_token", "send Authorization: Bearer <access token>")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _reject(request, 401, "invalid_token", "the Authorization header must be 'Bearer <token>'")
    try:
        claims = request.app[TOKENS].verify(token)
    except TokenError as exc:
        raise _reject(request, 401, exc.code, exc.message) from None
    status = await request.app[REVOCATION].status(claims.sub, claims.jti, claims.sid, claims.gen)
    if status == DISABLED:
        raise _reject(request, 403, "user_disabled", "this account is disabled")
    if status == REVOKED:
        raise _reject(request, 401, "token_revoked", "this token has been revoked; log in again")
    return claims


async def current_user(request: web.Request) -> tuple[AccessClaims, User]:
    """As :func:`authenticate`, and the caller's *current* record (role, organization, disabled)
    from PostgreSQL: what authorization decisions read, never the token's copy."""
    claims = await authenticate(request)
    user = await request.app[USERS].get(claims.sub)
    if user is None:
        raise _reject(request, 401, "invalid_token", "the token's user no longer exists")
    if user.disabled:
        raise _reject(request, 403, "user_disabled", "this account is disabled")
    return claims, user


async def require_admin(request: web.Request) -> tuple[AccessClaims, User]:
    """As :func:`current_user`, and the caller is a platform admin (role ``admin``)."""
    claims, user = await current_user(request)
    if user.role != "admin":
        raise _reject(request, 403, "forbidden", "this endpoint requires the admin role")
    return claims, user


async def require_org_admin(request: web.Request) -> tuple[AccessClaims, User]:
    """As :func:`current_user`, and the caller administers its organization (``org_admin``, or a
    platform admin acting in its own organization)."""
    claims, user = await current_user(request)
    if user.role not in {"org_admin", "admin"}:
        raise _reject(request, 403, "forbidden", "this endpoint requires the org_admin role")
    return claims, user
