"""The auth service's aiohttp application: routes, middlewares and resource lifecycles."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis

from auth import handlers_admin, handlers_keys, handlers_orgs, handlers_usage, handlers_users
from auth.accounts import Directory, ensure_bootstrap_admin
from auth.api_keys import ApiKeyStore
from auth.appkeys import (
    API_KEYS,
    AUDIT,
    DIRECTORY,
    HASHER,
    KEYS,
    METRICS,
    POOL,
    REDIS,
    REFRESH,
    REGISTRATIONS,
    REVOCATION,
    SETTINGS,
    THROTTLE,
    TOKENS,
    USAGE,
    USERS,
)
from auth.audit import AuditLog
from auth.bruteforce import LoginPolicy, LoginThrottle, RegistrationThrottle
from auth.database import DATABASE_INVALID_INPUT, DATABASE_UNAVAILABLE, migrate, open_pool
from auth.invitations import InvitationStore
from auth.metrics import AuthMetrics
from auth.organizations import OrganizationStore
from auth.passwords import PasswordHasher
from auth.refresh import RefreshTokenStore
from auth.settings import AuthSettings
from auth.tokens import build_token_service
from auth.usage import UsageReader
from auth.users import UserStore
from common.http import (
    json_error,
    json_response,
    make_error_middleware,
    no_store_on_prepare,
    security_headers_middleware,
)
from common.keyspace import Keyspace
from common.redis import REDIS_UNAVAILABLE, RedisClient, open_service_redis
from common.revocation import REVOCATION_MARGIN_SECONDS, TokenRevocation

__all__ = ["close_redis", "create_app"]

log = structlog.get_logger(__name__)

BOOTSTRAP_ATTEMPTS = 5
READY_TIMEOUT = 2.0


async def close_redis(client: RedisClient) -> None:
    """Close a client and its pool (``create_redis`` hands the single-node client its own pool)."""
    if isinstance(client, Redis):
        await client.aclose(close_connection_pool=True)
    else:
        await client.aclose()


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    common = settings.common
    redis = await open_service_redis(common)
    keys = app[KEYS]
    # A login's revocation must outlive the newest access token issued under it.
    login_ttl = settings.access_token_ttl + settings.token_leeway
    app[REDIS] = redis
    app[REVOCATION] = TokenRevocation(redis, keys, login_ttl=login_ttl)
    app[REFRESH] = RefreshTokenStore(
        redis,
        keys,
        ttl=settings.refresh_token_ttl,
        revoked_login_ttl=login_ttl + REVOCATION_MARGIN_SECONDS,
    )
    app[THROTTLE] = LoginThrottle(
        redis,
        keys,
        LoginPolicy(
            free_failures=settings.login_free_failures,
            backoff_base=settings.login_backoff_base,
            backoff_max=settings.login_backoff_max,
            max_failures_per_address=settings.login_max_failures_per_ip,
            user_ceiling=settings.login_user_ceiling,
            window=settings.login_failure_window,
            known_address_ttl=settings.login_known_address_days * 86400,
        ),
    )
    app[REGISTRATIONS] = RegistrationThrottle(
        redis, keys, limit=settings.register_max_per_ip, window=settings.register_window
    )
    yield
    await close_redis(redis)


async def _database_ctx(app: web.Application) -> AsyncIterator[None]:
    """The PostgreSQL pool and the stores over it; migrations are applied first (bounded retries:
    a database that stays down fails the start, as a supervisor expects)."""
    settings = app[SETTINGS]
    for attempt in range(1, BOOTSTRAP_ATTEMPTS + 1):
        try:
            await migrate(settings.database_url)
            break
        except DATABASE_UNAVAILABLE as exc:
            if attempt == BOOTSTRAP_ATTEMPTS:
                raise
            log.warning("database_migration_retry", attempt=attempt, error=str(exc))
            await asyncio.sleep(attempt)
    pool = await open_pool(settings.database_url)
    users = UserStore(pool, app[REDIS], app[KEYS])
    app[POOL] = pool
    app[USERS] = users
    app[DIRECTORY] = Directory(
        pool=pool, users=users, organizations=OrganizationStore(pool), invitations=InvitationStore(pool)
    )
    app[AUDIT] = AuditLog(pool)
    app[API_KEYS] = ApiKeyStore(pool)
    app[USAGE] = UsageReader(pool)
    yield
    await pool.close()


async def _hasher_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    metrics = app[METRICS]
    executor = ThreadPoolExecutor(max_workers=settings.hash_workers, thread_name_prefix="bcrypt")
    hasher = PasswordHasher(
        rounds=settings.bcrypt_rounds,
        executor=executor,
        slots=settings.hash_workers,
        queue_timeout=settings.hash_queue_timeout,
        observe=metrics.password_hash_seconds.observe,
    )
    metrics.track_in_flight(lambda: hasher.in_flight)
    app[HASHER] = hasher
    try:
        await hasher.prepare()
        yield
    finally:
        # Let running hashes finish (their callbacks need the loop), drop queued ones.
        await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)


async def _bootstrap_ctx(app: web.Application) -> AsyncIterator[None]:
    admin = app[SETTINGS].bootstrap_admin
    if admin is not None:
        for attempt in range(1, BOOTSTRAP_ATTEMPTS + 1):
            try:
                await ensure_bootstrap_admin(app[DIRECTORY], app[HASHER], admin)
                break
            except (*REDIS_UNAVAILABLE, *DATABASE_UNAVAILABLE) as exc:
                if attempt == BOOTSTRAP_ATTEMPTS:
                    raise
                log.warning("bootstrap_admin_retry", attempt=attempt, error=str(exc))
                await asyncio.sleep(attempt)
    yield


async def health(request: web.Request) -> web.Response:
    """Liveness: the process serves requests (nothing external is checked)."""
    return json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """Readiness: Redis and PostgreSQL answer."""
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await request.app[REDIS].ping()
    except REDIS_UNAVAILABLE as exc:
        log.warning("not_ready", error=str(exc))
        return json_error(503, "not_ready", "redis is unavailable", {"Retry-After": "1"})
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await request.app[POOL].fetchval("SELECT 1")
    except DATABASE_UNAVAILABLE as exc:
        log.warning("not_ready", error=str(exc))
        return json_error(503, "not_ready", "postgresql is unavailable", {"Retry-After": "1"})
    return json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(settings: AuthSettings) -> web.Application:
    """Build the app; connections open in ``cleanup_ctx`` when it starts, in dependency order."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            security_headers_middleware,
            make_error_middleware(
                unavailable=(*REDIS_UNAVAILABLE, *DATABASE_UNAVAILABLE), invalid_input=DATABASE_INVALID_INPUT
            ),
        ],
    )
    # Tokens and account data must not be cached; the JWKS handler sets its own public max-age.
    app.on_response_prepare.append(no_store_on_prepare)
    app[SETTINGS] = settings
    app[KEYS] = Keyspace(settings.common.key_prefix)
    app[METRICS] = AuthMetrics.create()
    app[TOKENS] = build_token_service(settings)
    app.cleanup_ctx.extend([_redis_ctx, _database_ctx, _hasher_ctx, _bootstrap_ctx])
    app.add_routes(handlers_users.routes)
    app.add_routes(handlers_admin.routes)
    app.add_routes(handlers_orgs.routes)
    app.add_routes(handlers_keys.routes)
    app.add_routes(handlers_usage.routes)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    return app
