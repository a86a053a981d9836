"""Liveness, readiness (RabbitMQ + Redis) and Prometheus metrics."""

from __future__ import annotations

import contextlib

from aio_pika.abc import AbstractChannel
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from common.amqp import broker_usable
from common.health import redis_answers
from common.http import json_error, json_response
from gateway.appkeys import AMQP, BACKLOG, BROKER_CHANNELS, LIFECYCLE, METRICS, REDIS, ROUTER, SESSIONS


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """200 only when this instance can take a chat: HAProxy sends traffic by this answer.

    The broker connection must be connected with its channels restored (a robust connection that
    lost the broker is reconnecting, not closed), the request publisher's and the reply queue's
    channels open, and Redis must answer a PING in time.
    """
    app = request.app
    if app[LIFECYCLE].draining:
        return json_error(503, "draining", "this instance is shutting down", {"Retry-After": "1"})
    problems: list[str] = []
    channels: list[AbstractChannel] = app[BROKER_CHANNELS]
    if not broker_usable(app[AMQP], channels):
        problems.append("rabbitmq")
    if not await redis_answers(app[REDIS]):
        problems.append("redis")
    if problems:
        return json_error(503, "not_ready", f"unavailable: {', '.join(problems)}", {"Retry-After": "1"})
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
