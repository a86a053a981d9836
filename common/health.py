"""The small HTTP port of a background service: ``/health``, ``/ready`` and ``/metrics``.

It answers like the API services do: errors (404, 405, aiohttp's own) in the JSON error shape with
the security headers; served by :func:`common.runtime.serving`, so protocol errors, slow clients
and the ``Server`` banner are handled as everywhere else."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from aio_pika.abc import AbstractChannel, AbstractConnection
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from common.amqp import broker_usable
from common.http import error_middleware, security_headers_middleware
from common.redis import REDIS_UNAVAILABLE, RedisClient

ReadyCheck = Callable[[], Awaitable[bool]]

# A probe must answer within the prober's own timeout (HAProxy: `timeout check 2s`): a Redis that
# does not answer a PING within this is not ready, whatever it would say later.
PING_TIMEOUT_SECONDS = 1.0
_PING_FAILED: tuple[type[Exception], ...] = (*REDIS_UNAVAILABLE, TimeoutError)


def create_health_app(
    *,
    ready: ReadyCheck,
    registry: CollectorRegistry,
    before_scrape: Callable[[], None] | None = None,
) -> web.Application:
    """``ready`` says whether the dependencies answer; ``before_scrape`` refreshes gauges."""

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readiness(request: web.Request) -> web.Response:
        if await ready():
            return web.json_response({"status": "ready"})
        return web.json_response(
            {"error": "not_ready", "message": "broker or Redis unavailable"},
            status=503,
            headers={"Retry-After": "1"},
        )

    async def metrics(request: web.Request) -> web.Response:
        if before_scrape is not None:
            before_scrape()
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(middlewares=[security_headers_middleware, error_middleware])
    app.router.add_get("/health", health)
    app.router.add_get("/ready", readiness)
    app.router.add_get("/metrics", metrics)
    return app


async def redis_answers(redis: RedisClient | None) -> bool:
    """True when Redis answers a PING within ``PING_TIMEOUT_SECONDS``."""
    if redis is None:
        return False
    try:
        async with asyncio.timeout(PING_TIMEOUT_SECONDS):
            await redis.ping()
    except _PING_FAILED:
        return False
    return True


async def broker_and_redis_ready(
    connection: AbstractConnection | None,
    redis: RedisClient | None,
    channels: Iterable[AbstractChannel] = (),
) -> bool:
    """True when the broker connection can carry traffic (not merely "not closed": a robust
    connection that lost its broker is reconnecting, not closed), each of ``channels`` is open,
    and Redis answers a PING."""
    return broker_usable(connection, channels) and await redis_answers(redis)
