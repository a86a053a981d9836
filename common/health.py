"""The small HTTP port of a background service: ``/health``, ``/ready`` and ``/metrics``.

It answers like the API services do: errors (404, 405, aiohttp's own) in the JSON error shape with
the security headers; served by :func:`common.runtime.serving`, so protocol errors, slow clients
and the ``Server`` banner are handled as everywhere else."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractConnection
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.exceptions import RedisClusterException, RedisError

from common.http import error_middleware, security_headers_middleware
from common.redis import RedisClient

ReadyCheck = Callable[[], Awaitable[bool]]


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
        return web.json_response({"error": "not_ready", "message": "broker or Redis unavailable"}, status=503)

    async def metrics(request: web.Request) -> web.Response:
        if before_scrape is not None:
            before_scrape()
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(middlewares=[security_headers_middleware, error_middleware])
    app.router.add_get("/health", health)
    app.router.add_get("/ready", readiness)
    app.router.add_get("/metrics", metrics)
    return app


async def broker_and_redis_ready(connection: AbstractConnection | None, redis: RedisClient | None) -> bool:
    """True when the AMQP connection is open and Redis answers a PING."""
    if connection is None or connection.is_closed or redis is None:
        return False
    try:
        await redis.ping()
    except (RedisError, RedisClusterException, OSError):
        return False
    return True
