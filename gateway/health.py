"""Liveness, readiness (RabbitMQ + Redis) and Prometheus metrics."""

from __future__ import annotations

import contextlib

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from common.http import json_error, json_response
from gateway.appkeys import AMQP, BACKLOG, LIFECYCLE, METRICS, REDIS, ROUTER, SESSIONS


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    app = request.app
    if app[LIFECYCLE].draining:
        return json_error(503, "draining", "this instance is shutting down")
    problems: list[str] = []
    if app[AMQP].is_closed:
        problems.append("rabbitmq")
    try:
        await app[REDIS].ping()
    except Exception:
        problems.append("redis")
    if problems:
        return json_error(503, "not_ready", f"unavailable: {', '.join(problems)}")
    return json_response({"status": "ready", "in_flight": app[ROUTER].in_flight})


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    gauges = app[METRICS]
    # Read from Redis at scrape time: the same, right value from every instance (use max() across them).
    with contextlib.suppress(RedisError, OSError):
        gauges.active_sessions.set(await app[SESSIONS].active_count())
    backlog = app.get(BACKLOG)
    if backlog is not None and (depth := await backlog.depth()) is not None:
        gauges.queue_depth.labels(backlog.queue).set(depth)
    return web.Response(body=generate_latest(gauges.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
