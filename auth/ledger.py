"""The usage ledger: ``generation.finished`` events from the broker -> the ``usage`` table.

Workers publish the usage of every finished generation (done, cancelled, failed, expired) before
they ack the request: one ``generation.finished`` event, or a ``UsageBatch`` of the events that
ended within one tick on that worker. This consumer buffers events and writes them in batches
(``LEDGER_BATCH_SIZE`` events, or after ``LEDGER_BATCH_SECONDS``), one
``INSERT ... ON CONFLICT (request_id) DO NOTHING``: a request id is recorded exactly once,
whatever the redeliveries (a crashed worker's request, a ledger that died before its acks).
Messages are acked only after their batch is committed; while PostgreSQL is down they stay
unacked (the prefetch bounds them) and the batch is retried with back-off.
Nothing on the chat path waits for any of this.

It also owns monthly quotas: every ``LEDGER_QUOTA_INTERVAL`` seconds it lists the organizations
whose usage this calendar month (UTC) reached ``monthly_token_quota`` and writes them to Redis
(``Keyspace.quota_exhausted``, with a TTL); gateways read that list every few seconds and refuse
new chats of those organizations with 429 ``quota_exceeded``. The check lags the ledger by up to
the batch delay plus both intervals (a few seconds), so an organization can overshoot its quota
by what it generates meanwhile.

Prometheus: ``chat_tokens_total{org,model,kind}`` (kind ``prompt``/``completion``), counted for
rows actually inserted (never twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from auth.database import DATABASE_UNAVAILABLE, Pool, migrate, open_pool
from auth.settings import LedgerSettings
from broker.messages import GenerationFinished, UsageBatch, usage_decoder
from common.amqp import connect, ready_messages, topology_for
from common.health import broker_and_redis_ready, create_health_app
from common.keyspace import Keyspace
from common.redis import REDIS_UNAVAILABLE, RedisClient, open_service_redis
from common.service import Service
from common.service import main as service_main

__all__ = ["Ledger", "LedgerMetrics", "main"]

log = structlog.get_logger(__name__)
MAX_BACKOFF = 10.0

_INSERT = """
INSERT INTO usage (request_id, user_id, organization_id, key_id, model, kind, outcome, prompt_tokens,
                   completion_tokens, duration_ms, finished_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::int[], $9::int[], $10::float8[], $11::timestamptz[])
ON CONFLICT (request_id) DO NOTHING
RETURNING organization_id, model, prompt_tokens, completion_tokens
"""
_EXHAUSTED = """
SELECT o.id FROM organizations o
WHERE o.monthly_token_quota IS NOT NULL
  AND o.monthly_token_quota <= coalesce((
      SELECT sum(u.prompt_tokens + u.completion_tokens) FROM usage u
      WHERE u.organization_id = o.id AND u.finished_at >= $1), 0)
ORDER BY o.id
"""


class LedgerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.tokens = Counter(
            "chat_tokens_total",
            "Tokens recorded in the usage ledger, by organization, model and kind (prompt, completion)",
            ["org", "model", "kind"],
            registry=self.registry,
        )
        self.recorded = Counter(
            "ledger_events_total",
            "Usage events handled, by result (recorded, duplicate, rejected)",
            ["result"],
            registry=self.registry,
        )
        self.batch = Histogram(
            "ledger_batch_size",
            "Events per ledger write",
            buckets=(1, 5, 20, 50, 100, 200, 500, 1000),
            registry=self.registry,
        )
        self.lag = Histogram(
            "ledger_lag_seconds",
            "From a generation's end to its row being committed",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=self.registry,
        )
        self.failures = Counter(
            "ledger_write_failures_total",
            "Batches that could not be written (retried)",
            registry=self.registry,
        )


def month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class Ledger(Service):
    """The ledger consumer and the quota sweep: ``start()``/``close()``, or ``async with``."""

    def __init__(self, settings: LedgerSettings, metrics: LedgerMetrics | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.metrics = metrics or LedgerMetrics()
        self.keys = Keyspace(settings.common.key_prefix)
        self.topology = topology_for(settings.common)
        self._pool: Pool | None = None
        self._redis: RedisClient | None = None
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        # Each message with its events (a UsageBatch carries several): acked once, after all are written.
        self._buffer: list[tuple[AbstractIncomingMessage, list[GenerationFinished]]] = []
        self._arrived = asyncio.Event()
        self._writing = 0
        self._flushing = asyncio.Lock()  # one writer at a time: a message is acked once

    async def start(self) -> None:
        s, teardown = self.settings, self.teardown
        await migrate(s.database_url)
        self._pool = pool = await open_pool(s.database_url, max_size=4)
        teardown.push("database_close", 5, pool.close)
        self._redis = redis = await open_service_redis(s.common)
        teardown.push("redis_close", 5, redis.aclose)
        self._connection = connection = await connect(
            s.common.rabbitmq_url, client_name=f"ledger-{s.instance_id}"
        )
        teardown.push("amqp_close", 10, connection.close)
        self._channel = await connection.channel()
        await self._channel.set_qos(prefetch_count=2 * s.batch_size)
        declared = await self.topology.declare(self._channel)
        loop = asyncio.get_running_loop()
        # Last-first on close: stop consuming, then write what is buffered, then stop the sweep.
        teardown.cancel("quota_sweep", 5, loop.create_task(self._sweep_quotas()))
        teardown.cancel("writer", 10, loop.create_task(self._write_loop()))
        teardown.push("flush", 10, self._flush_until_empty)
        queue = declared.ledger_queue
        consumer_tag = await queue.consume(self._on_message)
        teardown.push("cancel_consumer", 5, functools.partial(queue.cancel, consumer_tag))
        log.info("ledger_started", batch_size=s.batch_size, batch_seconds=s.batch_seconds)

    async def ready(self) -> bool:
        if not await broker_and_redis_ready(
            self._connection, self._redis, [self._channel] if self._channel is not None else []
        ):
            return False
        assert self._pool is not None
        try:
            async with asyncio.timeout(2):
                await self._pool.fetchval("SELECT 1")
        except DATABASE_UNAVAILABLE:
            return False
        return True

    @property
    def busy(self) -> int:
        return sum(len(events) for _, events in self._buffer) + self._writing

    async def backlog(self) -> int:
        assert self._connection is not None, "start() the ledger first"
        return await ready_messages(self._connection, [self.topology.ledger_queue])

    # -- consuming -------------------------------------------------------------------------------
    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            decoded = usage_decoder.decode(message.body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self.metrics.recorded.labels("rejected").inc()
            log.warning("usage_event_rejected", error=str(exc))
            await message.reject(requeue=False)  # to the dead-letter queue
            return
        events = decoded.events if isinstance(decoded, UsageBatch) else [decoded]
        self._buffer.append((message, events))
        self._arrived.set()

    async def _write_loop(self) -> None:
        s = self.settings
        backoff = 0.5
        while True:
            await self._arrived.wait()
            deadline = time.monotonic() + s.batch_seconds
            while self._buffered() < s.batch_size and (left := deadline - time.monotonic()) > 0:
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await self._arrived.wait()
            try:
                await self._flush()
                backoff = 0.5
            except DATABASE_UNAVAILABLE as exc:
                self.metrics.failures.inc()
                log.warning("ledger_write_failed", error=str(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
            if not self._buffer:
                self._arrived.clear()

    async def _flush_until_empty(self) -> None:
        while self._buffer:
            await self._flush()

    def _buffered(self) -> int:
        return sum(len(events) for _, events in self._buffer)

    async def _flush(self) -> None:
        """Write up to one batch (whole messages, at least one); ack its messages after the commit."""
        async with self._flushing:
            taken, count = 0, 0
            while taken < len(self._buffer) and (
                taken == 0 or count + len(self._buffer[taken][1]) <= self.settings.batch_size
            ):
                count += len(self._buffer[taken][1])
                taken += 1
            batch = self._buffer[:taken]
            if not batch:
                return
            events = [event for _, message_events in batch for event in message_events]
            self._writing = len(events)
            try:
                inserted = await self.record(events) if events else 0
            finally:
                self._writing = 0
            del self._buffer[:taken]
            for message, _ in batch:
                await message.ack()
        self.metrics.batch.observe(len(events))
        self.metrics.recorded.labels("recorded").inc(inserted)
        self.metrics.recorded.labels("duplicate").inc(len(events) - inserted)
        now = time.time()
        for event in events:
            self.metrics.lag.observe(max(0.0, now - event.finished_at))

    async def record(self, events: Sequence[GenerationFinished]) -> int:
        """Insert the events (each request id once); returns how many rows were new."""
        assert self._pool is not None
        rows = await self._pool.fetch(
            _INSERT,
            [e.request_id for e in events],
            [e.user_id for e in events],
            [e.org_id for e in events],
            [e.key_id or None for e in events],
            [e.model for e in events],
            [e.api for e in events],
            [e.outcome for e in events],
            [max(0, e.prompt_tokens) for e in events],
            [max(0, e.completion_tokens) for e in events],
            [e.duration_ms for e in events],
            [datetime.fromtimestamp(e.finished_at, UTC) for e in events],
        )
        for row in rows:
            org, model = row["organization_id"], row["model"]
            self.metrics.tokens.labels(org, model, "prompt").inc(row["prompt_tokens"])
            self.metrics.tokens.labels(org, model, "completion").inc(row["completion_tokens"])
        return len(rows)

    # -- quotas ----------------------------------------------------------------------------------
    async def _sweep_quotas(self) -> None:
        while True:
            try:
                await self.sweep_quotas()
            except (*DATABASE_UNAVAILABLE, *REDIS_UNAVAILABLE) as exc:
                log.warning("quota_sweep_failed", error=str(exc))
            await asyncio.sleep(self.settings.quota_interval)

    async def sweep_quotas(self) -> list[str]:
        """Publish the organizations over their monthly quota; returns them."""
        assert self._pool is not None and self._redis is not None
        rows = await self._pool.fetch(_EXHAUSTED, month_start(datetime.now(UTC)))
        exhausted = [row["id"] for row in rows]
        ttl = max(5, int(self.settings.quota_interval * 5))
        await self._redis.set(self.keys.quota_exhausted(), json.dumps(exhausted), ex=ttl)
        return exhausted


def create_ledger_health_app(ledger: Ledger) -> web.Application:
    return create_health_app(ready=ledger.ready, registry=ledger.metrics.registry)


def main(argv: Sequence[str] | None = None) -> None:
    service_main(
        LedgerSettings.from_env, Ledger, create_ledger_health_app, prog="python -m auth.ledger", argv=argv
    )


if __name__ == "__main__":
    main()
