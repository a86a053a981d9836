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
import functools
import time

import msgspec
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from archiver.metrics import ArchiverMetrics
from archiver.settings import ArchiverSettings
from archiver.sweeper import IdleSweeper
from broker.envelope import envelope, publish
from broker.messages import SessionEvent, event_decoder
from common.amqp import connect, ready_messages, topology_for
from common.archive import (
    ArchiveCorrupt,
    ArchivedSession,
    ArchiveStore,
    ArchiveUnavailable,
    merge_turns,
    object_key,
    pointer_of,
)
from common.health import broker_and_redis_ready
from common.keyspace import Keyspace
from common.redis import RedisClient, open_service_redis
from common.service import Service
from common.session_reader import SessionReader
from common.sessions import SessionStore

log = structlog.get_logger(__name__)
ATTEMPTS_HEADER = "x-archive-attempts"


class Archiver(Service):
    """The archive consumer and the idle sweeper: ``start()``/``close()``, or ``async with``."""

    def __init__(self, settings: ArchiverSettings, metrics: ArchiverMetrics | None = None) -> None:
        super().__init__()
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
        self._handlers: set[asyncio.Task[None]] = set()
        self._bucket_ready = False
        self.sweeper: IdleSweeper | None = None

    async def start(self, *, sweep: bool = True) -> None:
        """Open Redis, S3 and the broker, then consume (and sweep idle sessions unless ``sweep``
        is false). Each resource registers its shutdown step as it opens (see :meth:`close`)."""
        s, teardown = self.settings, self.teardown
        self._redis = redis = await open_service_redis(s.common)
        teardown.push("redis_close", 5, redis.aclose)
        self._sessions = SessionStore(redis, self.keys)
        self._reader = SessionReader(self._sessions, self.store)
        await teardown.enter("s3_close", 10, self.store)
        try:
            await self._ensure_bucket()
        except ArchiveUnavailable as exc:
            log.warning("archive_bucket_unavailable", error=str(exc))  # retried before each write
        self._connection = connection = await connect(
            s.common.rabbitmq_url, client_name=f"archiver-{s.instance_id}"
        )
        teardown.push("amqp_close", 10, connection.close)
        self._channel = await connection.channel(publisher_confirms=True)
        await self._channel.set_qos(prefetch_count=s.concurrency)
        declared = await self.topology.declare(self._channel)
        self.sweeper = IdleSweeper(
            redis,
            self.keys,
            self._sessions,
            declared.events,
            self.metrics,
            idle_seconds=s.idle_seconds,
            interval=s.sweep_interval,
            batch=s.sweep_batch,
            instance_id=s.instance_id,
        )
        teardown.drain("drain", self._handlers, 10)
        queue = declared.archiver_queue
        consumer_tag = await queue.consume(self._on_message)
        teardown.push("cancel_consumer", 5, functools.partial(queue.cancel, consumer_tag))
        if sweep:
            teardown.cancel("sweeper", 5, asyncio.get_running_loop().create_task(self.sweeper.run()))
        log.info("archiver_started", bucket=s.s3.bucket, idle_seconds=s.idle_seconds)

    async def close(self) -> None:
        """Stop sweeping and consuming, let running archives finish (bounded), then close the
        broker connection, S3 and Redis, each step bounded.

        Messages still being handled after the grace period stay unacked, so the broker hands
        them to another archiver; archiving is idempotent.
        """
        await super().close()
        self._connection, self._redis = None, None
        log.info("archiver_stopped")

    async def ready(self) -> bool:
        """True when the broker connection is open and Redis answers."""
        return await broker_and_redis_ready(
            self._connection, self._redis, [self._channel] if self._channel is not None else []
        )

    @property
    def busy(self) -> int:
        """Events being archived right now."""
        return len(self._handlers)

    async def backlog(self) -> int:
        """Events waiting in the archiver queue and, deferred after an S3 failure, in its delay
        queue (they come back by themselves, so they are work still to do)."""
        assert self._connection is not None, "start() the archiver first"
        return await ready_messages(
            self._connection, [self.topology.archiver_queue, self.topology.archiver_retry_queue]
        )

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
            retry = envelope(
                message.body,
                type=event.event,
                persistent=True,
                request_id=event.request_id,
                trace_id=event.trace_id,
                expiration=delay,
                headers={ATTEMPTS_HEADER: attempts},
            )
            # mandatory: a missing retry queue fails the publish, so the event is not acked and lost.
            await publish(
                self._channel.default_exchange, self.topology.archiver_retry_queue, retry, mandatory=True
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
        removed = await sessions.finish_archive(snapshot, pointer_of(key, document), remove=finishing)
        log.info("session_archived", key=key, turns=len(document.turns), removed=removed)
        return "removed" if removed else "kept"
