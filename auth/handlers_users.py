"""The public endpoints: register, login, refresh, logout (one login or all), me, password change
and the JWKS document."""

from __future__ import annotations

import time

import structlog
from aiohttp import web

from auth.accounts import register_account
from auth.appkeys import (
    AUDIT,
    DIRECTORY,
    HASHER,
    METRICS,
    REFRESH,
    REGISTRATIONS,
    REVOCATION,
    SETTINGS,
    THROTTLE,
    TOKENS,
    USERS,
)
from auth.bruteforce import LoginThrottled
from auth.guard import authenticate
from auth.passwords import WeakPassword, check_password_policy
from auth.refresh import RefreshOutcome
from auth.schemas import LoginRequest, PasswordChangeRequest, RefreshRequest, RegisterRequest
from auth.users import User
from common.http import ApiError, client_address, json_response, read_json

__all__ = ["routes"]

routes = web.RouteTableDef()
log = structlog.get_logger(__name__)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_NO_USER = "0" * 32


def _token_response(
    request: web.Request, user: User, refresh_token: str, family_id: str, generation: int
) -> web.Response:
    access_token, _ = request.app[TOKENS].issue(
        user_id=user.user_id,
        username=user.username,
        organization=user.organization_id,
        role=user.role,
        session_id=family_id,
        generation=generation,
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


def _client_ip(request: web.Request) -> str:
    return client_address(request, trusted_proxies=request.app[SETTINGS].trusted_proxies)


def _throttled(request: web.Request, retry_after: int) -> ApiError:
    return _fail(
        request,
        429,
        "too_many_attempts",
        "too many failed attempts; try again later",
        **{"Retry-After": str(retry_after)},
    )


@routes.post("/register")
async def register(request: web.Request) -> web.Response:
    body = await read_json(request, RegisterRequest)
    client_ip = _client_ip(request)
    wait = await request.app[REGISTRATIONS].admit(client_ip)
    if wait is not None:
        log.info("registration_throttled", client_ip=client_ip)
        raise _fail(
            request,
            429,
            "registration_throttled",
            "too many registrations from this address; try again later",
            **{"Retry-After": str(wait)},
        )
    try:
        user, joined_by = await register_account(
            request.app[DIRECTORY],
            request.app[HASHER],
            username=body.username,
            email=body.email,
            organization=body.organization,
            password=body.password,
            invitation_token=body.invitation_token,
            open_signup=request.app[SETTINGS].open_signup,
        )
    except ApiError as exc:
        request.app[METRICS].failures.labels(reason=exc.code).inc()
        raise
    request.app[METRICS].registrations.inc()
    await request.app[AUDIT].record(
        "user_registered",
        actor_id=user.user_id,
        organization_id=user.organization_id,
        target_id=user.user_id,
        client_ip=client_ip,
        joined_by=joined_by,
    )
    log.info(
        "user_registered", user_id=user.user_id, organization_id=user.organization_id, joined_by=joined_by
    )
    payload = {
        "user_id": user.user_id,
        "username": user.username,
        "organization": user.organization,
        "organization_id": user.organization_id,
        "joined_by": joined_by,
        "email": user.email,
        "role": user.role,
        "created_at": user.created_at,
    }
    return json_response(payload, status=201, headers=NO_STORE)


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    body = await read_json(request, LoginRequest)
    app = request.app
    metrics, throttle = app[METRICS], app[THROTTLE]
    users, hasher = app[USERS], app[HASHER]
    client_ip = _client_ip(request)
    try:
        async with throttle.attempt(body.username, client_ip) as attempt:
            user = await users.find_by_username(body.username)
            # Read before the password check: a revocation that lands meanwhile (a password change,
            # logout/all, disable) voids this login instead of being outrun by it. Unknown users
            # read too: same work, same time.
            generation = await app[REVOCATION].generation(user.user_id if user else _NO_USER)
            if user is None or not user.password_hash:  # unknown, or a service account
                await hasher.verify_dummy(body.password)  # same work, same time, same answer
                attempt.password_ok = False
            else:
                attempt.password_ok = await hasher.verify(body.password, user.password_hash)
    except LoginThrottled as exc:
        metrics.logins.labels(result="locked").inc()
        log.info("login_throttled", client_ip=client_ip, retry_after=exc.retry_after)
        raise _throttled(request, exc.retry_after) from None
    audit = app[AUDIT]
    if user is None or not attempt.password_ok:
        metrics.logins.labels(result="invalid_credentials").inc()
        log.info("login_failed", client_ip=client_ip, known_user=user is not None)
        await audit.record(
            "login_failed",
            actor_id=user.user_id if user else None,
            organization_id=user.organization_id if user else None,
            client_ip=client_ip,
            username=body.username[:64],
        )
        raise _fail(request, 401, "invalid_credentials", "username or password is incorrect")
    if user.disabled:
        metrics.logins.labels(result="disabled").inc()
        await audit.record(
            "login_refused_disabled",
            actor_id=user.user_id,
            organization_id=user.organization_id,
            client_ip=client_ip,
        )
        raise _fail(request, 403, "user_disabled", "this account is disabled")
    if hasher.needs_rehash(user.password_hash):  # the configured cost changed since it was stored
        await users.set_password_hash(user.user_id, await hasher.hash(body.password))
    issued = await app[REFRESH].issue(user.user_id, generation)
    if issued is None:
        metrics.logins.labels(result="invalid_credentials").inc()
        log.info("login_raced_revocation", user_id=user.user_id)
        raise _fail(request, 401, "invalid_credentials", "username or password is incorrect")
    refresh_token, family_id = issued
    metrics.logins.labels(result="success").inc()
    await audit.record(
        "login", actor_id=user.user_id, organization_id=user.organization_id, client_ip=client_ip
    )
    log.info("login", user_id=user.user_id, client_ip=client_ip)
    return _token_response(request, user, refresh_token, family_id, generation)


@routes.post("/refresh")
async def refresh(request: web.Request) -> web.Response:
    body = await read_json(request, RefreshRequest)
    store = request.app[REFRESH]
    result = await store.rotate(body.refresh_token)
    if result.outcome is RefreshOutcome.REUSED:
        # The script already revoked the family and its access tokens (revoked_sid).
        log.warning("refresh_token_reuse", user_id=result.user_id, family_id=result.family_id)
        raise _fail(request, 401, "refresh_token_reused", "refresh token was already used; log in again")
    if result.outcome is RefreshOutcome.INVALID:
        raise _fail(request, 401, "invalid_refresh_token", "refresh token is invalid or expired")
    user = await request.app[USERS].get(result.user_id)
    if user is None or user.disabled:
        await store.revoke_family(result.user_id, result.family_id)
        await request.app[REVOCATION].revoke_login(result.user_id, result.family_id)
        if user is None:
            raise _fail(request, 401, "invalid_refresh_token", "refresh token is invalid or expired")
        raise _fail(request, 403, "user_disabled", "this account is disabled")
    return _token_response(request, user, result.token, result.family_id, result.generation)


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    """End this login: every access token issued under it (its ``sid``, on every gateway at once:
    they check Redis per request) and its refresh tokens."""
    claims = await authenticate(request)
    revocation = request.app[REVOCATION]
    remaining = claims.exp + request.app[SETTINGS].token_leeway - int(time.time())
    await revocation.revoke_token(claims.sub, claims.jti, remaining)  # tokens issued without a sid
    if claims.sid:
        await revocation.revoke_login(claims.sub, claims.sid)
        await request.app[REFRESH].revoke_family(claims.sub, claims.sid)
    log.info("logout", user_id=claims.sub)
    return web.Response(status=204, headers=NO_STORE)


@routes.post("/logout/all")
async def logout_all(request: web.Request) -> web.Response:
    """End every login of the caller: all access and refresh tokens; a new login works at once."""
    claims = await authenticate(request)
    # The generation bump voids every access token and refresh family; deleting the families is
    # clean-up (they are already dead).
    await request.app[REVOCATION].revoke_user(claims.sub)
    families = await request.app[REFRESH].revoke_all(claims.sub)
    log.info("logout_all", user_id=claims.sub, refresh_families_revoked=families)
    return web.Response(status=204, headers=NO_STORE)


@routes.post("/me/password")
async def change_password(request: web.Request) -> web.Response:
    """Change the caller's password: needs the current one (throttled like a login), applies the
    password policy, and ends every login of the user, this one included (log in again)."""
    claims = await authenticate(request)
    body = await read_json(request, PasswordChangeRequest)
    app = request.app
    users, hasher, throttle = app[USERS], app[HASHER], app[THROTTLE]
    user = await users.get(claims.sub)
    if user is None:
        raise _fail(request, 401, "invalid_token", "the token's user no longer exists")
    try:
        async with throttle.attempt(user.username, _client_ip(request)) as attempt:
            attempt.password_ok = await hasher.verify(body.current_password, user.password_hash)
    except LoginThrottled as exc:
        raise _throttled(request, exc.retry_after) from None
    if not attempt.password_ok:
        log.info("password_change_refused", user_id=user.user_id)
        raise _fail(request, 403, "invalid_current_password", "the current password is incorrect")
    try:
        check_password_policy(body.new_password, username=user.username)
    except WeakPassword as exc:
        raise _fail(request, 400, "weak_password", str(exc)) from None
    if not await users.change_password(user.user_id, await hasher.hash(body.new_password)):
        raise _fail(request, 401, "invalid_token", "the token's user no longer exists")
    families = await app[REFRESH].revoke_all(user.user_id)
    log.info("password_changed", user_id=user.user_id, refresh_families_revoked=families)
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
