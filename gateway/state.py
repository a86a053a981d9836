"""Per-instance state shared by handlers, stored in the app under typed keys."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog
from aio_pika.abc import AbstractExchange, AbstractRobustConnection
from aiohttp import web
from redis.exceptions import RedisError
from yarl import URL

from broker.messages import Cancel
from common.archive import ArchiveStore
from common.cancels import CancelMarkers
from common.jobs import JobStore
from common.keyspace import Keyspace
from common.models import ModelRegistry
from common.redis import RedisClient
from common.session_reader import SessionReader
from common.sessions import SessionStore
from gateway.admission import Admission, Verdict
from gateway.metrics import GatewayMetrics
from gateway.publisher import RequestPublisher
from gateway.relay import ReplyRouter
from gateway.settings import GatewaySettings
from gateway.tokens import Principal, TokenVerifier

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class GatewayState:
    settings: GatewaySettings
    metrics: GatewayMetrics
    keys: Keyspace
    redis: RedisClient
    verifier: TokenVerifier
    router: ReplyRouter
    publisher: RequestPublisher
    admission: Admission
    sessions: SessionStore
    reader: SessionReader
    cancels: CancelMarkers
    model_registry: ModelRegistry
    jobs: JobStore
    archive: ArchiveStore
    events: AbstractExchange
    http: aiohttp.ClientSession
    draining: bool = False  # set on SIGTERM: /ready fails so HAProxy stops sending new requests
    _background: set[asyncio.Task[None]] = field(default_factory=set)
    _models: tuple[str, ...] = ()
    _models_read_at: float = -1e9

    async def queue_depth(self) -> int | None:
        """Messages waiting in the request queue, from RabbitMQ's management API (None if unknown)."""
        base = self.settings.rabbitmq_management_url
        if base is None:
            return None
        url = URL(self.settings.common.rabbitmq_url)
        vhost = quote(url.path[1:] or "/", safe="")
        queue = quote(f"{self.settings.common.broker_prefix}.requests", safe="")
        headers = {"Authorization": aiohttp.encode_basic_auth(url.user or "guest", url.password or "guest")}
        try:
            async with self.http.get(
                # encoded=True keeps the vhost's %2F from being decoded into a path separator
                URL(f"{base}/api/queues/{vhost}/{queue}", encoded=True),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=1),
            ) as response:
                if response.status != 200:
                    return None
                payload = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        # A queue declared moments ago has no statistics yet (the broker emits them every ~5 s).
        messages = payload.get("messages", 0)
        return int(messages) if isinstance(messages, int) else None

    async def models(self) -> tuple[str, ...]:
        """Models clients may ask for: ``ALLOWED_MODELS``, else what workers saw on healthy nodes
        in the last minute (cached for a few seconds); empty means "not known yet: allow any"."""
        if self.settings.allowed_models:
            return self.settings.allowed_models
        now = time.monotonic()
        if now - self._models_read_at > 5.0:
            self._models_read_at = now
            try:
                self._models = await self.model_registry.available()
            except (RedisError, OSError) as exc:
                log.warning("models_unavailable", error=str(exc))
        return self._models

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run fire-and-forget work that must outlive a cancelled handler (e.g. a cancel publish)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain_background(self, timeout: float = 5.0) -> None:
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout)

    async def cancel(self, cancel: Cancel, deadline: float) -> None:
        """Tell workers to stop: the fanout reaches running generations, the Redis marker later ones."""
        ttl = max(1, int(deadline - time.time()) + 5)
        try:
            await self.publisher.publish_cancel(cancel)
        except Exception as exc:
            log.warning("cancel_publish_failed", request_id=cancel.request_id, error=str(exc))
        try:
            await self.cancels.mark(cancel.user_id, cancel.request_id, cancel.reason, ttl=ttl)
        except Exception as exc:
            log.warning("cancel_mark_failed", request_id=cancel.request_id, error=str(exc))


STATE_KEY = web.AppKey("state", GatewayState)
AMQP_KEY = web.AppKey("amqp", AbstractRobustConnection)
PRINCIPAL_KEY = web.RequestKey("principal", Principal)
REQUEST_ID_KEY = web.RequestKey("request_id", str)
TRACE_ID_KEY = web.RequestKey("trace_id", str)
VERDICT_KEY = web.RequestKey("rate_limit_verdict", Verdict)


def principal_of(request: web.Request) -> Principal:
    """The verified caller (set by the auth middleware)."""
    return request[PRINCIPAL_KEY]


def request_id_of(request: web.Request) -> str:
    """This request's server-generated id: the correlation id, job id and cancel target."""
    return request[REQUEST_ID_KEY]


def trace_id_of(request: web.Request) -> str:
    """The caller's ``X-Request-ID`` (or the request id): for logs and message headers only."""
    return request[TRACE_ID_KEY]


__all__ = [
    "AMQP_KEY",
    "PRINCIPAL_KEY",
    "REQUEST_ID_KEY",
    "STATE_KEY",
    "TRACE_ID_KEY",
    "GatewayState",
    "Principal",
    "principal_of",
    "request_id_of",
    "trace_id_of",
]
