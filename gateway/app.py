"""``create_app``: the gateway's routes, middlewares and resource lifecycle."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import aiohttp
from aiohttp import web

from common.amqp import connect, topology_for
from common.archive import ArchiveStore
from common.cancels import CancelMarkers
from common.http import (
    make_error_middleware,
    no_store_on_prepare,
    security_headers_middleware,
    security_headers_on_prepare,
)
from common.jobs import JobStore
from common.keyspace import Keyspace
from common.models import ModelRegistry
from common.redis import REDIS_UNAVAILABLE, open_redis
from common.runtime import within
from common.session_reader import SessionReader
from common.sessions import SessionStore
from gateway.admission import Admission
from gateway.apidoc import openapi_document
from gateway.chat import chat
from gateway.health import health, ready
from gateway.health import metrics as metrics_endpoint
from gateway.jobs import cancel_job, create_job, get_job
from gateway.metrics import GatewayMetrics
from gateway.middlewares import (
    auth_middleware,
    rate_limit_headers_on_prepare,
    request_id_middleware,
    request_id_on_prepare,
)
from gateway.openai import chat_completions, list_models, openai_errors_middleware
from gateway.publisher import RequestPublisher
from gateway.relay import ReplyRouter
from gateway.sessions import delete_own_session, end_own_session, get_own_session, list_own_sessions
from gateway.settings import GatewaySettings
from gateway.state import AMQP_KEY, STATE_KEY, GatewayState
from gateway.tokens import TokenVerifier

SETTINGS_KEY = web.AppKey("settings", GatewaySettings)
METRICS_KEY = web.AppKey("metrics", GatewayMetrics)


async def _resources(app: web.Application) -> AsyncIterator[None]:
    """Redis, the JWKS HTTP client and the AMQP connection, opened in order and closed in reverse."""
    settings = app[SETTINGS_KEY]
    common = settings.common
    redis = await open_redis(
        common.redis_url, cluster=common.redis_cluster, max_connections=common.redis_max_connections
    )
    http = aiohttp.ClientSession()
    keys = Keyspace(common.key_prefix)
    connection = None
    stack = AsyncExitStack()
    try:
        connection = await connect(common.rabbitmq_url, client_name=f"gateway-{settings.instance_id}")
        topology = topology_for(common)
        declare_channel = await connection.channel()
        await topology.declare(declare_channel)
        await declare_channel.close()
        confirm_channel = await connection.channel(publisher_confirms=True)
        requests = await confirm_channel.get_exchange(topology.requests_exchange, ensure=False)
        cancel = await confirm_channel.get_exchange(topology.cancel_exchange, ensure=False)
        events = await confirm_channel.get_exchange(topology.events_exchange, ensure=False)
        archive = await stack.enter_async_context(ArchiveStore(settings.s3))
        reply_channel = await connection.channel(publisher_confirms=False)
        sessions = SessionStore(redis, keys)
        router = ReplyRouter(
            reply_channel,
            topology.reply_queue(settings.instance_id, uuid.uuid4().hex[:8]),
            # Outlives a broker reconnect and the longest chat this process can be relaying.
            expires_seconds=settings.chat_deadline + 60,
            on_drop=lambda reason: app[METRICS_KEY].replies_dropped.labels(reason).inc(),
        )
        await router.start()
        stack.push_async_callback(router.close)
        app[AMQP_KEY] = connection
        app[STATE_KEY] = GatewayState(
            settings=settings,
            metrics=app[METRICS_KEY],
            keys=keys,
            redis=redis,
            verifier=TokenVerifier(
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                algorithms=settings.jwt_algorithms,
                static_keys=settings.jwt_public_keys,
                jwks_url=settings.jwks_url,
                http=http,
                leeway=settings.jwt_leeway,
            ),
            router=router,
            publisher=RequestPublisher(confirm_channel, requests, cancel, timeout=settings.publish_timeout),
            admission=Admission(
                redis,
                keys,
                user_limit=settings.rate_limit_per_minute,
                org_limit=settings.rate_limit_org_per_minute,
                window_seconds=settings.rate_limit_window,
            ),
            sessions=sessions,
            reader=SessionReader(sessions, archive),
            cancels=CancelMarkers(redis, keys),
            model_registry=ModelRegistry(redis, keys),
            jobs=JobStore(redis, keys, ttl=common.job_ttl),
            archive=archive,
            events=events,
            http=http,
        )
        yield
        await app[STATE_KEY].drain_background()
    finally:
        await within(10, "reply_queue_and_s3_close", stack.aclose())
        if connection is not None:
            await within(10, "amqp_close", connection.close())
        await within(5, "http_close", http.close())
        await within(5, "redis_close", redis.aclose())


def create_app(settings: GatewaySettings, metrics: GatewayMetrics | None = None) -> web.Application:
    metrics = metrics or GatewayMetrics()

    def track(exc: Exception) -> None:
        metrics.unhandled.labels(type(exc).__name__).inc()

    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            security_headers_middleware,
            openai_errors_middleware,
            make_error_middleware(unavailable=REDIS_UNAVAILABLE, on_unhandled=track),
            request_id_middleware,
            auth_middleware,
        ],
    )
    app[SETTINGS_KEY] = settings
    app[METRICS_KEY] = metrics
    app.cleanup_ctx.append(_resources)
    app.on_response_prepare.append(security_headers_on_prepare)
    app.on_response_prepare.append(no_store_on_prepare)  # per-user answers, streams included
    app.on_response_prepare.append(request_id_on_prepare)
    app.on_response_prepare.append(rate_limit_headers_on_prepare)
    app.router.add_post("/chat", chat)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_post("/jobs", create_job)
    app.router.add_get("/jobs/{job_id}", get_job)
    app.router.add_delete("/jobs/{job_id}", cancel_job)
    app.router.add_get("/sessions", list_own_sessions)
    app.router.add_get("/sessions/{session_id}", get_own_session)
    app.router.add_delete("/sessions/{session_id}", delete_own_session)
    app.router.add_post("/sessions/{session_id}/end", end_own_session)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/openapi.json", openapi_document)
    return app
