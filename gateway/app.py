"""``create_app``: the gateway's middlewares, routes and resources.

Each resource has its own ``cleanup_ctx`` entry, opened in dependency order and closed in reverse
(aiohttp runs a teardown only if its setup ran): Redis and the stores on it, the HTTP client (JWKS,
management API), the S3 archive, the broker connection and publisher, the reply queue, and last
this instance's background work, which is drained before the connections it uses close.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiohttp
from aio_pika.abc import AbstractChannel
from aiohttp import web

from common.amqp import connect, topology_for
from common.archive import ArchiveStore
from common.cancels import CancelMarkers
from common.exchanges import ChatRecords
from common.http import (
    make_error_middleware,
    no_store_on_prepare,
    security_headers_middleware,
    security_headers_on_prepare,
)
from common.jobs import JobStore
from common.keyspace import Keyspace
from common.models import ModelRegistry
from common.redis import REDIS_UNAVAILABLE, open_service_redis
from common.runtime import within
from common.session_reader import SessionReader
from common.sessions import SessionStore
from gateway.admission import Admission
from gateway.api_keys import ApiKeyVerifier, AuthUnavailable
from gateway.appkeys import (
    ADMISSION,
    AMQP,
    ARCHIVE,
    BACKLOG,
    BROKER_CHANNELS,
    EVENTS,
    HTTP,
    JOBS,
    KEYS,
    LIFECYCLE,
    METRICS,
    MODELS,
    PUBLISHER,
    QUOTA,
    READER,
    RECORDS,
    REDIS,
    ROUTER,
    SESSIONS,
    SETTINGS,
    VERIFIER,
)
from gateway.backlog import QueueBacklog
from gateway.cors import CORS, cors_middleware, cors_on_prepare
from gateway.lifecycle import Lifecycle
from gateway.metrics import GatewayMetrics
from gateway.middlewares import (
    admission_middleware,
    authentication_middleware,
    rate_limit_headers_on_prepare,
    request_id_middleware,
    request_id_on_prepare,
)
from gateway.models import ModelCatalog
from gateway.ollama_api import ollama_errors_middleware
from gateway.openai import openai_errors_middleware
from gateway.page import PAGE, PageAssets
from gateway.publisher import RequestPublisher
from gateway.quota import QuotaWatch
from gateway.replies import ReplyRouter
from gateway.routes import add_routes
from gateway.settings import GatewaySettings
from gateway.tokens import TokenVerifier

__all__ = ["create_app"]

# Reading an active session never waits longer than this for S3 (see SessionReader).
ARCHIVE_INDEX_WAIT_SECONDS = 1.0


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    """The Redis client and the stores on it."""
    settings, keys = app[SETTINGS], app[KEYS]
    common = settings.common
    redis = await open_service_redis(common, client_name=f"gateway-{settings.instance_id}")
    app[REDIS] = redis
    app[SESSIONS] = SessionStore(redis, keys)
    app[RECORDS] = ChatRecords(redis, keys, app[SESSIONS])
    app[JOBS] = JobStore(redis, keys, ttl=common.job_ttl)
    app[ADMISSION] = Admission(
        redis,
        keys,
        user_limit=settings.rate_limit_per_minute,
        org_limit=settings.rate_limit_org_per_minute,
        window_seconds=settings.rate_limit_window,
    )
    app[MODELS] = ModelCatalog(
        ModelRegistry(redis, keys), allowed=settings.allowed_models, default=settings.default_model
    )
    app[QUOTA] = quota = QuotaWatch(redis, keys, interval=settings.quota_refresh)
    quota_task = asyncio.get_running_loop().create_task(quota.run(), name="quota-refresh")
    yield
    quota_task.cancel()
    await within(5, "redis_close", redis.aclose())


async def _http_ctx(app: web.Application) -> AsyncIterator[None]:
    """The HTTP client: the auth service's JWKS and RabbitMQ's management API."""
    settings = app[SETTINGS]
    http = aiohttp.ClientSession()
    app[HTTP] = http
    api_keys = None
    if settings.api_key_verify_url is not None:
        api_keys = ApiKeyVerifier(
            http,
            settings.api_key_verify_url,
            ttl=settings.api_key_cache_ttl,
            internal_token=settings.internal_token,
        )
    app[VERIFIER] = TokenVerifier(
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        algorithms=settings.jwt_algorithms,
        static_keys=settings.jwt_public_keys,
        jwks_url=settings.jwks_url,
        http=http,
        leeway=settings.jwt_leeway,
        api_keys=api_keys,
    )
    if settings.rabbitmq_management_url is not None:
        app[BACKLOG] = QueueBacklog(
            http,
            settings.rabbitmq_management_url,
            settings.common.rabbitmq_url,
            topology_for(settings.common).requests_queue,
        )
    yield
    await within(5, "http_close", http.close())


async def _archive_ctx(app: web.Application) -> AsyncIterator[None]:
    """The S3 archive client, and the session reader that falls back to it."""
    async with ArchiveStore(app[SETTINGS].s3) as archive:
        app[ARCHIVE] = archive
        app[READER] = SessionReader(app[SESSIONS], archive, index_wait=ARCHIVE_INDEX_WAIT_SECONDS)
        yield


async def _broker_ctx(app: web.Application) -> AsyncIterator[None]:
    """The broker connection, the topology, and the confirmed publisher for requests and events."""
    settings = app[SETTINGS]
    connection = await connect(settings.common.rabbitmq_url, client_name=f"gateway-{settings.instance_id}")
    try:
        topology = topology_for(settings.common)
        declare_channel = await connection.channel()
        await topology.declare(declare_channel)
        await declare_channel.close()
        confirm_channel = await connection.channel(publisher_confirms=True)
        requests = await confirm_channel.get_exchange(topology.requests_exchange, ensure=False)
        cancel = await confirm_channel.get_exchange(topology.cancel_exchange, ensure=False)
        app[EVENTS] = await confirm_channel.get_exchange(topology.events_exchange, ensure=False)
        app[PUBLISHER] = RequestPublisher(
            confirm_channel,
            requests,
            cancel,
            CancelMarkers(app[REDIS], app[KEYS]),
            timeout=settings.publish_timeout,
            publisher=settings.common.rabbitmq_user,
        )
        app[AMQP] = connection
        channels: list[AbstractChannel] = [confirm_channel]  # /ready checks them (the reply
        app[BROKER_CHANNELS] = channels  # queue's channel joins in _replies_ctx)
        yield
    finally:
        await within(10, "amqp_close", connection.close())


async def _replies_ctx(app: web.Application) -> AsyncIterator[None]:
    """This process's reply queue, deleted at the end (it would expire on its own)."""
    settings, metrics = app[SETTINGS], app[METRICS]
    channel = await app[AMQP].channel(publisher_confirms=False)
    app[BROKER_CHANNELS].append(channel)
    router = ReplyRouter(
        channel,
        topology_for(settings.common).reply_queue(settings.instance_id, uuid.uuid4().hex[:8]),
        # Outlives a broker reconnect and the longest chat this process can be relaying.
        expires_seconds=settings.chat_deadline + 60,
        on_drop=lambda reason: metrics.replies_dropped.labels(reason).inc(),
    )
    await router.start()
    app[ROUTER] = router
    yield
    await within(10, "reply_queue_close", router.close())


async def _background_ctx(app: web.Application) -> AsyncIterator[None]:
    """Background work (cancel publishes) finishes while the broker and Redis are still open."""
    yield
    await app[LIFECYCLE].drain()


def create_app(settings: GatewaySettings, metrics: GatewayMetrics | None = None) -> web.Application:
    metrics = metrics or GatewayMetrics()

    def track(exc: Exception) -> None:
        metrics.unhandled.labels(type(exc).__name__).inc()

    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            security_headers_middleware,
            openai_errors_middleware,
            ollama_errors_middleware,
            make_error_middleware(unavailable=(*REDIS_UNAVAILABLE, AuthUnavailable), on_unhandled=track),
            request_id_middleware,
            cors_middleware,  # pre-flights are answered before authentication
            authentication_middleware,
            admission_middleware,
        ],
    )
    app[SETTINGS] = settings
    app[CORS] = settings.cors
    app[METRICS] = metrics
    app[KEYS] = Keyspace(settings.common.key_prefix)
    app[LIFECYCLE] = Lifecycle()
    app[PAGE] = PageAssets.load()
    app.cleanup_ctx.extend([_redis_ctx, _http_ctx, _archive_ctx, _broker_ctx, _replies_ctx, _background_ctx])
    app.on_response_prepare.append(security_headers_on_prepare)
    app.on_response_prepare.append(no_store_on_prepare)  # per-user answers, streams included
    app.on_response_prepare.append(request_id_on_prepare)
    app.on_response_prepare.append(rate_limit_headers_on_prepare)
    app.on_response_prepare.append(cors_on_prepare)
    add_routes(app)
    return app
