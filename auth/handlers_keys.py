"""API keys: a user's own (``/me/api-keys``), service accounts' keys (org admins, ``/org/...``),
and the gateways' verification (``/internal/api-keys/verify``; auth/api_keys.py has the design)."""

from __future__ import annotations

import hmac
import math

import msgspec
import structlog
from aiohttp import web

from auth.api_keys import SCOPES, ApiKey, key_jti
from auth.appkeys import API_KEYS, AUDIT, REVOCATION, SETTINGS, USERS
from auth.guard import current_user, require_org_admin
from auth.schemas import ApiKeyRequest
from auth.users import User
from common.http import ApiError, client_address, json_response, read_json
from common.revocation import REVOCATION_MARGIN_SECONDS

__all__ = ["INTERNAL_TOKEN_HEADER", "routes"]

routes = web.RouteTableDef()
log = structlog.get_logger(__name__)

NO_STORE = {"Cache-Control": "no-store"}
INTERNAL_TOKEN_HEADER = "X-Internal-Token"


class VerifyRequest(msgspec.Struct, forbid_unknown_fields=True):
    api_key: str


def _ip(request: web.Request) -> str:
    return client_address(request, trusted_proxies=request.app[SETTINGS].trusted_proxies)


async def _create(request: web.Request, actor: User, owner: User) -> web.Response:
    body = await read_json(request, ApiKeyRequest)
    unknown = sorted(set(body.scopes) - set(SCOPES))
    if unknown or not body.scopes:
        raise ApiError(400, "invalid_scope", f"scopes must be a non-empty subset of: {', '.join(SCOPES)}")
    key, secret = await request.app[API_KEYS].create(
        user_id=owner.user_id,
        organization_id=owner.organization_id,
        name=body.name,
        scopes=sorted(set(body.scopes)),
        expires_in=body.expires_in,
        created_by=actor.user_id,
    )
    await request.app[AUDIT].record(
        "api_key_created",
        actor_id=actor.user_id,
        organization_id=owner.organization_id,
        target_id=key.key_id,
        client_ip=_ip(request),
        owner_id=owner.user_id,
        name=key.name,
        scopes=list(key.scopes),
    )
    return json_response({**key.public(), "api_key": secret}, status=201, headers=NO_STORE)


async def _revoke(request: web.Request, actor: User, key: ApiKey) -> web.Response:
    revoked = await request.app[API_KEYS].revoke(key.key_id)
    if revoked is None:
        raise ApiError(404, "api_key_not_found", "no such API key")
    # Gateways cache a verified key for API_KEY_CACHE_TTL; the mark outlives any cache entry.
    ttl = math.ceil(2 * request.app[SETTINGS].api_key_cache_ttl) + REVOCATION_MARGIN_SECONDS
    await request.app[REVOCATION].revoke_token(key.user_id, key_jti(key.key_id), ttl)
    await request.app[AUDIT].record(
        "api_key_revoked",
        actor_id=actor.user_id,
        organization_id=key.organization_id,
        target_id=key.key_id,
        client_ip=_ip(request),
        owner_id=key.user_id,
    )
    return web.Response(status=204, headers=NO_STORE)


@routes.post("/me/api-keys")
async def create_own_key(request: web.Request) -> web.Response:
    """A personal key: shown once in ``api_key``; stored as a hash."""
    _, user = await current_user(request)
    return await _create(request, user, user)


@routes.get("/me/api-keys")
async def list_own_keys(request: web.Request) -> web.Response:
    _, user = await current_user(request)
    keys = await request.app[API_KEYS].of_user(user.user_id)
    return json_response({"api_keys": [key.public() for key in keys]}, headers=NO_STORE)


@routes.delete("/me/api-keys/{key_id}")
async def revoke_own_key(request: web.Request) -> web.Response:
    _, user = await current_user(request)
    key = await request.app[API_KEYS].get(request.match_info["key_id"])
    if key is None or key.user_id != user.user_id:
        raise ApiError(404, "api_key_not_found", "no such API key")
    return await _revoke(request, user, key)


@routes.post("/org/service-accounts/{user_id}/api-keys")
async def create_service_key(request: web.Request) -> web.Response:
    _, admin = await require_org_admin(request)
    owner = await request.app[USERS].get(request.match_info["user_id"])
    if owner is None or owner.organization_id != admin.organization_id or owner.kind != "service":
        raise ApiError(404, "user_not_found", "no such service account in your organization")
    return await _create(request, admin, owner)


@routes.get("/org/api-keys")
async def list_org_keys(request: web.Request) -> web.Response:
    _, admin = await require_org_admin(request)
    keys = await request.app[API_KEYS].of_organization(admin.organization_id)
    return json_response({"api_keys": [key.public() for key in keys]}, headers=NO_STORE)


@routes.delete("/org/api-keys/{key_id}")
async def revoke_org_key(request: web.Request) -> web.Response:
    _, admin = await require_org_admin(request)
    key = await request.app[API_KEYS].get(request.match_info["key_id"])
    if key is None or key.organization_id != admin.organization_id:
        raise ApiError(404, "api_key_not_found", "no such API key")
    return await _revoke(request, admin, key)


@routes.post("/internal/api-keys/verify")
async def verify_key(request: web.Request) -> web.Response:
    """For gateways: who a key acts as, or 401 ``invalid_api_key``. Not routed by HAProxy; with
    ``INTERNAL_API_TOKEN`` set, callers must send it in ``X-Internal-Token``."""
    expected = request.app[SETTINGS].internal_token
    if expected and not hmac.compare_digest(request.headers.get(INTERNAL_TOKEN_HEADER, ""), expected):
        raise ApiError(403, "forbidden", "internal endpoint")
    body = await read_json(request, VerifyRequest)
    verified = await request.app[API_KEYS].verify(body.api_key)
    if verified is None:
        raise ApiError(401, "invalid_api_key", "the API key is unknown, revoked or expired")
    return json_response(msgspec.structs.asdict(verified), headers=NO_STORE)
