"""The archiver: stores finished sessions in S3 and removes them from Redis once verified.

For each ``session.finished`` (or ``session.spilled``) event: snapshot the session, merge it into
its archive object, write and verify it, then clear what was stored from Redis, removing the
session only if it did not change meanwhile. Replays are harmless (the merge is idempotent).
S3 trouble: a few quick retries (tenacity), then the event waits in a delay queue and comes back;
nothing is deleted until a write is verified. Invalid events go to the dead-letter queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType
from typing import Self

import aio_pika
import msgspec
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from archiver.metrics import ArchiverMetrics
from archiver.settings import ArchiverSettings
from archiver.sweeper import IdleSweeper
from broker.messages import HEADER_REQUEST_ID, HEADER_TRACE_ID, SessionEvent, event_decoder
from common.amqp import connect, topology_for
from common.archive import (
    ArchiveCorrupt,
    ArchivedSession,
    ArchiveStore,
    ArchiveUnavailable,
    merge_turns,
    object_key,
)
from common.health import broker_and_redis_ready
from common.keyspace import Keyspace
from common.redis import RedisClient, open_redis
from common.runtime import within
from common.session_reader import SessionReader
from common.sessions import ArchivePointer, SessionStore

log = structlog.get_logger(__name__)
ATTEMPTS_HEADER = "x-archive-attempts"


class Archiver:
    def __init__(self, settings: ArchiverSettings, metrics: ArchiverMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or ArchiverMetrics()
        self.keys = Keyspace(settings.common.key_prefix)
        self.topology = topology_for(settings.common)
        self.store = ArchiveStore(settings.s3)
        self._redis: RedisClient | None = None
        self._sessions: SessionStore | None = None
        self._reader: SessionReader | None = None
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._sweeper_task: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._bucket_ready = False
        self.sweeper: IdleSweeper | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self, *, sweep: bool = True) -> None:
        s = self.settings
        self._redis = await open_redis(
            s.common.redis_url, cluster=s.common.redis_cluster, max_connections=s.common.redis_max_connections
        )
        self._sessions = SessionStore(self._redis, self.keys)
        self._reader = SessionReader(self._sessions, self.store)
        await self.store.__aenter__()
        try:
            await self._ensure_bucket()
        except ArchiveUnavailable as exc:
            log.warning("archive_bucket_unavailable", error=str(exc))  # retried before each write
        self._connection = await connect(s.common.rabbitmq_url, client_name=f"archiver-{s.instance_id}")
        self._channel = await self._connection.channel(publisher_confirms=True)
        await self._channel.set_qos(prefetch_count=s.concurrency)
        declared = await self.topology.declare(self._channel)
        self.sweeper = IdleSweeper(
            self._redis,
            self.keys,
            self._sessions,
            declared.events,
            self.metrics,
            idle_seconds=s.idle_seconds,
            interval=s.sweep_interval,
            batch=s.sweep_batch,
            instance_id=s.instance_id,
        )
        self._queue = declared.archiver_queue
        self._consumer_tag = await self._queue.consume(self._on_message)
        if sweep:
            self._sweeper_task = asyncio.get_running_loop().create_task(self.sweeper.run())
        log.info("archiver_started", bucket=s.s3.bucket, idle_seconds=s.idle_seconds)

    async def close(self) -> None:
        """Stop consuming, let running archives finish (bounded), then close in reverse order.

        Messages still being handled after the grace period stay unacked, so the broker hands
        them to another archiver; archiving is idempotent.
        """
        if self._sweeper_task is not None:
            self._sweeper_task.cancel()
            await within(5, "sweeper", asyncio.gather(self._sweeper_task, return_exceptions=True))
            self._sweeper_task = None
        if self._queue is not None and self._consumer_tag is not None:
            with contextlib.suppress(Exception):
                await within(5, "cancel_consumer", self._queue.cancel(self._consumer_tag))
            self._consumer_tag = None
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=10)
        if self._connection is not None:
            await within(10, "amqp_close", self._connection.close())
            self._connection = None
        await within(10, "s3_close", self.store.__aexit__(None, None, None))
        if self._redis is not None:
            await within(5, "redis_close", self._redis.aclose())
            self._redis = None
        log.info("archiver_stopped")

    async def ready(self) -> bool:
        """True when the broker connection is open and Redis answers."""
        return await broker_and_redis_ready(self._connection, self._redis)

    # -- consuming -------------------------------------------------------------------------------
    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.get_running_loop().create_task(self._handle(message))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            event = event_decoder.decode(message.body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self.metrics.rejected.inc()
            log.warning("archive_event_rejected", error=str(exc))
            await message.reject(requeue=False)
            return
        structlog.contextvars.bind_contextvars(
            request_id=event.request_id, trace_id=event.trace_id, session_id=event.session_id
        )
        try:
            if event.event not in ("session.finished", "session.spilled"):
                await message.ack()
                return
            try:
                result = await self.archive(event)
            except (ArchiveUnavailable, ArchiveCorrupt) as exc:
                self.metrics.failures.labels(exc.__class__.__name__).inc()
                log.warning("archive_deferred", error=str(exc))
                await self._defer(message, event)
                return
            self.metrics.archived.labels(result).inc()
            if result in ("removed", "kept"):
                self.metrics.lag.observe(max(0.0, time.time() - event.at))
            await message.ack()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.metrics.failures.labels(type(exc).__name__).inc()
            log.exception("archive_crashed", error_type=type(exc).__name__)
            with contextlib.suppress(Exception):
                await self._defer(message, event)
        finally:
            structlog.contextvars.unbind_contextvars("request_id", "trace_id", "session_id")

    async def _defer(self, message: AbstractIncomingMessage, event: SessionEvent) -> None:
        """Park the event in the delay queue (exponential back-off), then ack the original."""
        assert self._channel is not None
        previous = (message.headers or {}).get(ATTEMPTS_HEADER, 0)
        attempts = (previous if isinstance(previous, int) else 0) + 1
        delay = min(self.settings.retry_delay * (2 ** min(attempts - 1, 16)), self.settings.retry_delay_max)
        try:
            await self._channel.default_exchange.publish(
                aio_pika.Message(
                    message.body,
                    content_type="application/json",
                    type=event.event,
                    headers={
                        ATTEMPTS_HEADER: attempts,
                        HEADER_REQUEST_ID: event.request_id,
                        HEADER_TRACE_ID: event.trace_id,
                    },
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    expiration=delay,
                ),
                routing_key=self.topology.archiver_retry_queue,
            )
        except Exception:
            log.exception("archive_defer_failed")
            await asyncio.sleep(min(delay, 5.0))  # no hot loop while the broker is unhappy too
            await message.nack(requeue=True)
            return
        self.metrics.retries.inc()
        await message.ack()

    # -- archiving -------------------------------------------------------------------------------
    async def _ensure_bucket(self) -> None:
        if not self._bucket_ready:
            await self.store.ensure_bucket()
            self._bucket_ready = True

    async def archive(self, event: SessionEvent) -> str:
        """Archive one session; returns 'removed', 'kept' (changed meanwhile), 'skipped' or 'gone'."""
        assert self._sessions is not None and self._reader is not None
        sessions = self._sessions
        user_id, session_id = event.user_id, event.session_id
        if await sessions.deleted(user_id, session_id):
            return "gone"
        located = await self._reader.locate(user_id, session_id)
        snapshot, previous = located.snapshot, located.pointer
        if snapshot is None:
            return "gone"  # already archived (a replay) or never existed
        finishing = event.event == "session.finished"
        if finishing and snapshot.meta.state == "active":
            return "skipped"  # the user came back after it ended; a later end archives it
        if not finishing and not snapshot.spilled:
            return "skipped"
        meta = snapshot.meta
        # A session resumed after archiving keeps its one object (and its original date path).
        key = previous.key if previous else object_key(meta.org_id, user_id, session_id, meta.created_at)
        document: ArchivedSession | None = None
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self.settings.write_attempts),
            wait=wait_exponential(multiplier=0.2, max=2),
            retry=retry_if_exception_type((ArchiveUnavailable, ArchiveCorrupt)),
            reraise=True,
        ):
            with attempt:
                try:
                    await self._ensure_bucket()
                    existing = await self.store.get(key)
                    document = ArchivedSession(
                        session_id=session_id,
                        user_id=user_id,
                        org_id=meta.org_id,
                        title=existing.title if existing and existing.title else meta.title,
                        created_at=min(meta.created_at, existing.created_at) if existing else meta.created_at,
                        last_activity=meta.last_activity,
                        archived_at=time.time(),
                        version=meta.version,
                        turns=merge_turns(
                            existing.turns if existing else [],
                            [*snapshot.spilled, *(snapshot.turns if finishing else [])],
                        ),
                    )
                    self.metrics.object_bytes.observe(await self.store.put_verified(key, document))
                except ArchiveUnavailable:
                    self._bucket_ready = False
                    raise
        assert document is not None
        if await sessions.deleted(user_id, session_id):
            await self.store.delete(key)  # deleted while we were writing: leave nothing behind
            return "gone"
        pointer = ArchivePointer(
            key=key,
            org_id=meta.org_id,
            title=document.title,
            turns=len(document.turns),
            created_at=document.created_at,
            last_activity=document.last_activity,
            archived_at=document.archived_at,
            version=meta.version,
        )
        removed = await sessions.finish_archive(snapshot, pointer, remove=finishing)
        log.info("session_archived", key=key, turns=len(document.turns), removed=removed)
        return "removed" if removed else "kept"
