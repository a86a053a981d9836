"""Gateway middlewares: request and trace ids (propagated to workers and logs), bearer-token
authentication, and admission (revocation, disabled users, rate limits)."""

from __future__ import annotations

import re
import uuid

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from common.http import ApiError
from gateway.admission import DISABLED, LIMITED, REVOKED
from gateway.appkeys import (
    ADMISSION,
    METRICS,
    PRINCIPAL,
    QUOTA,
    REQUEST_ID,
    SETTINGS,
    TRACE_ID,
    VERDICT,
    VERIFIER,
)
from gateway.quota import seconds_to_next_month
from gateway.routes import Access, access_of
from gateway.tokens import InvalidToken, required_scope

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="chat"'}


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Generate this request's id; keep a well-formed incoming ``X-Request-ID`` as its trace id.

    The request id routes replies, names jobs and targets cancels, so it is always the server's
    own (128 random bits): a client-chosen value would let two callers share a reply stream or
    cancel each other's work. The caller's ``X-Request-ID`` (HAProxy sets one) is only a trace id:
    logged, carried in broker messages and echoed back.
    """
    request_id = uuid.uuid4().hex
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    trace_id = incoming if _VALID_REQUEST_ID.fullmatch(incoming) else request_id
    request[REQUEST_ID] = request_id
    request[TRACE_ID] = trace_id
    structlog.contextvars.bind_contextvars(request_id=request_id, trace_id=trace_id)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers[REQUEST_ID_HEADER] = trace_id
        raise
    finally:
        structlog.contextvars.unbind_contextvars("request_id", "trace_id")
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = trace_id
    return response


async def request_id_on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    if TRACE_ID in request:
        response.headers.setdefault(REQUEST_ID_HEADER, request[TRACE_ID])


@web.middleware
async def authentication_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Verify the bearer token locally (public key); no call to the auth service."""
    if access_of(request) is Access.PUBLIC:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        request.app[METRICS].auth_failures.labels("missing_token").inc()
        raise ApiError(
            401, "missing_token", "send 'Authorization: Bearer <access token>'", headers=_CHALLENGE
        )
    try:
        principal = await request.app[VERIFIER].verify(token.strip())
    except InvalidToken as exc:
        request.app[METRICS].auth_failures.labels(exc.code).inc()
        raise ApiError(401, exc.code, exc.message, headers=_CHALLENGE) from None
    if not principal.allows(scope := required_scope(request.path)):
        request.app[METRICS].auth_failures.labels("insufficient_scope").inc()
        raise ApiError(403, "insufficient_scope", f"this API key lacks the {scope!r} scope")
    request[PRINCIPAL] = principal
    structlog.contextvars.bind_contextvars(user_id=principal.user_id)
    try:
        return await handler(request)
    finally:
        structlog.contextvars.unbind_contextvars("user_id")


@web.middleware
async def admission_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Admit an authenticated caller: token not revoked, user not disabled, within the rate limit
    (spent by routes that start a generation). One Redis round trip (gateway/admission.py)."""
    principal = request.get(PRINCIPAL)
    if principal is None:  # a public route
        return await handler(request)
    metrics = request.app[METRICS]
    cost = 1 if access_of(request) is Access.GENERATION else 0
    s = request.app[SETTINGS]
    # A generation's record opens with its admission (one round trip): see common/exchanges.py.
    record = (request[REQUEST_ID], int(s.chat_deadline + s.common.resume_record_seconds)) if cost else None
    try:
        verdict = await request.app[ADMISSION].admit(
            principal.user_id,
            principal.org_id,
            principal.jti,
            cost=cost,
            sid=principal.session_id,
            generation=principal.generation,
            record=record,
        )
    except RedisError as exc:
        raise ApiError(
            503, "unavailable", "the service cannot check this request now", headers={"Retry-After": "1"}
        ) from exc
    if verdict.status == REVOKED:
        metrics.auth_failures.labels("token_revoked").inc()
        raise ApiError(401, "token_revoked", "this token has been revoked; log in again", headers=_CHALLENGE)
    if verdict.status == DISABLED:
        metrics.auth_failures.labels("user_disabled").inc()
        raise ApiError(403, "user_disabled", "this account is disabled")
    if verdict.status == LIMITED:
        metrics.rate_limited.labels(verdict.scope).inc()
        raise ApiError(
            429,
            "rate_limited",
            f"too many requests: the {verdict.scope} limit is {verdict.limit} "
            f"per {request.app[SETTINGS].rate_limit_window:g} s",
            headers=verdict.headers(),
        )
    if cost and request.app[QUOTA].exhausted(principal.org_id):
        metrics.rate_limited.labels("quota").inc()
        raise ApiError(
            429,
            "quota_exceeded",
            "your organization has used its monthly token quota; ask its admin, or wait for next month",
            headers={"Retry-After": str(seconds_to_next_month())},
        )
    if cost:
        request[VERDICT] = verdict
    return await handler(request)


async def rate_limit_headers_on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """RateLimit-* headers on every response that spent from the limit, streamed ones included."""
    verdict = request.get(VERDICT)
    if verdict is not None:
        for name, value in verdict.headers().items():
            response.headers.setdefault(name, value)
