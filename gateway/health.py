"""Liveness, readiness (RabbitMQ + Redis) and Prometheus metrics."""

from __future__ import annotations

import contextlib

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from common.http import json_error, json_response
from gateway.state import AMQP_KEY, STATE_KEY


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if state.draining:
        return json_error(503, "draining", "this instance is shutting down")
    connection = request.app[AMQP_KEY]
    problems: list[str] = []
    if connection.is_closed:
        problems.append("rabbitmq")
    try:
        await state.redis.ping()
    except Exception:
        problems.append("redis")
    if problems:
        return json_error(503, "not_ready", f"unavailable: {', '.join(problems)}")
    return json_response({"status": "ready", "in_flight": state.router.in_flight})


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    # Read from Redis at scrape time: the same, right value from every instance (use max() across them).
    with contextlib.suppress(RedisError, OSError):
        state.metrics.active_sessions.set(await state.sessions.active_count())
    depth = await state.queue_depth()
    if depth is not None:
        state.metrics.queue_depth.labels(f"{state.settings.common.broker_prefix}.requests").set(depth)
    registry = state.metrics.registry
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
