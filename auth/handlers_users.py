"""The public endpoints: register, login, refresh, logout, me and the JWKS document."""

from __future__ import annotations

import time

import structlog
from aiohttp import web

from auth.accounts import create_account
from auth.appkeys import HASHER, KEYS, METRICS, REDIS, REFRESH, SETTINGS, THROTTLE, TOKENS, USERS
from auth.guard import authenticate
from auth.refresh import RefreshOutcome
from auth.schemas import LoginRequest, RefreshRequest, RegisterRequest
from auth.users import User
from common.http import ApiError, client_address, json_response, read_json

__all__ = ["routes"]

routes = web.RouteTableDef()
log = structlog.get_logger(__name__)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _token_response(request: web.Request, user: User, refresh_token: str, family_id: str) -> web.Response:
    access_token, _ = request.app[TOKENS].issue(
        user_id=user.user_id,
        username=user.username,
        organization=user.organization,
        role=user.role,
        session_id=family_id,
    )
    settings = request.app[SETTINGS]
    return json_response(
        {
            "access_token": access_token,
            "token_type": "bearer",
            "expires_in": settings.access_token_ttl,
            "refresh_token": refresh_token,
            "refresh_expires_in": settings.refresh_token_ttl,
        },
        headers=NO_STORE,
    )


def _fail(request: web.Request, status: int, code: str, message: str, **headers: str) -> ApiError:
    request.app[METRICS].failures.labels(reason=code).inc()
    return ApiError(status, code, message, headers=headers or None)


@routes.post("/register")
async def register(request: web.Request) -> web.Response:
    body = await read_json(request, RegisterRequest)
    try:
        user = await create_account(
            request.app[USERS],
            request.app[HASHER],
            username=body.username,
            email=body.email,
            organization=body.organization,
            password=body.password,
        )
    except ApiError as exc:
        request.app[METRICS].failures.labels(reason=exc.code).inc()
        raise
    request.app[METRICS].registrations.inc()
    log.info("user_registered", user_id=user.user_id, organization=user.organization)
    payload = {
        "user_id": user.user_id,
        "username": user.username,
        "organization": user.organization,
        "email": user.email,
        "role": user.role,
        "created_at": user.created_at,
    }
    return json_response(payload, status=201, headers=NO_STORE)


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    body = await read_json(request, LoginRequest)
    app = request.app
    settings, metrics, throttle = app[SETTINGS], app[METRICS], app[THROTTLE]
    users, hasher = app[USERS], app[HASHER]
    client_ip = client_address(
        request, trust_forwarded=settings.trust_forwarded, trusted_proxies=settings.trusted_proxy_count
    )
    wait = await throttle.retry_after(body.username, client_ip)
    if wait is not None:
        metrics.logins.labels(result="locked").inc()
        raise _fail(
            request,
            429,
            "too_many_attempts",
            "too many failed logins; try again later",
            **{"Retry-After": str(wait)},
        )
    user = await users.find_by_username(body.username)
    if user is None:
        await hasher.verify_dummy(body.password)  # same work, same time, same answer
        valid = False
    else:
        valid = await hasher.verify(body.password, user.password_hash)
    if user is None or not valid:
        await throttle.record_failure(body.username, client_ip)
        metrics.logins.labels(result="invalid_credentials").inc()
        log.info("login_failed", client_ip=client_ip, known_user=user is not None)
        raise _fail(request, 401, "invalid_credentials", "username or password is incorrect")
    if user.disabled:
        metrics.logins.labels(result="disabled").inc()
        raise _fail(request, 403, "user_disabled", "this account is disabled")
    await throttle.clear_user(body.username)
    if hasher.needs_rehash(user.password_hash):  # the configured cost changed since it was stored
        await users.set_password_hash(user.user_id, await hasher.hash(body.password))
    refresh_token, family_id = await app[REFRESH].issue(user.user_id)
    metrics.logins.labels(result="success").inc()
    log.info("login", user_id=user.user_id, client_ip=client_ip)
    return _token_response(request, user, refresh_token, family_id)


@routes.post("/refresh")
async def refresh(request: web.Request) -> web.Response:
    body = await read_json(request, RefreshRequest)
    store = request.app[REFRESH]
    result = await store.rotate(body.refresh_token)
    if result.outcome is RefreshOutcome.REUSED:
        log.warning("refresh_token_reuse", user_id=result.user_id, family_id=result.family_id)
        raise _fail(request, 401, "refresh_token_reused", "refresh token was already used; log in again")
    if result.outcome is RefreshOutcome.INVALID:
        raise _fail(request, 401, "invalid_refresh_token", "refresh token is invalid or expired")
    user = await request.app[USERS].get(result.user_id)
    if user is None or user.disabled:
        await store.revoke_family(result.user_id, result.family_id)
        if user is None:
            raise _fail(request, 401, "invalid_refresh_token", "refresh token is invalid or expired")
        raise _fail(request, 403, "user_disabled", "this account is disabled")
    return _token_response(request, user, result.token, result.family_id)


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    """Revoke this access token (until it would expire) and the login's refresh tokens."""
    claims = await authenticate(request)
    settings = request.app[SETTINGS]
    remaining = claims.exp + settings.token_leeway - int(time.time())
    if remaining > 0:
        await request.app[REDIS].set(request.app[KEYS].revoked_jti(claims.sub, claims.jti), "1", ex=remaining)
    if claims.sid:
        await request.app[REFRESH].revoke_family(claims.sub, claims.sid)
    log.info("logout", user_id=claims.sub)
    return web.Response(status=204, headers=NO_STORE)


@routes.get("/me")
async def me(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    user = await request.app[USERS].get(claims.sub)
    if user is None:
        raise _fail(request, 401, "invalid_token", "the token's user no longer exists")
    return json_response(user.public(), headers=NO_STORE)


@routes.get("/.well-known/jwks.json")
async def jwks(request: web.Request) -> web.Response:
    return json_response(request.app[TOKENS].jwks(), headers={"Cache-Control": "public, max-age=300"})
