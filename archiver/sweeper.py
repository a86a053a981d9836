"""The idle sweeper: ends sessions idle longer than SESSION_IDLE_SECONDS.

Several archiver instances may run: a short Redis lock lets one sweep at a time, and the end
script flips a session from active to ended exactly once, so each is announced once.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import structlog
from aio_pika.abc import AbstractExchange

from archiver.metrics import ArchiverMetrics
from broker.events import publish_session_event
from broker.messages import SessionEvent
from common.keyspace import Keyspace
from common.redis import RedisClient
from common.sessions import Ended, SessionStore

log = structlog.get_logger(__name__)


class IdleSweeper:
    def __init__(
        self,
        redis: RedisClient,
        keys: Keyspace,
        sessions: SessionStore,
        events: AbstractExchange,
        metrics: ArchiverMetrics,
        *,
        idle_seconds: float,
        interval: float,
        batch: int,
        instance_id: str,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._sessions = sessions
        self._events = events
        self._metrics = metrics
        self._idle = idle_seconds
        self._interval = interval
        self._batch = batch
        self._owner = f"{instance_id}:{uuid.uuid4().hex[:8]}"

    async def run(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sweep_failed")
            await asyncio.sleep(self._interval)

    async def sweep_once(self) -> int:
        """End idle sessions if this instance holds the sweep lock; returns how many it ended."""
        now = time.time()
        # Every instance reports the backlog age, not only the one holding the lock.
        oldest = await self._redis.zrange(self._keys.session_activity(), 0, 0, withscores=True)
        self._metrics.oldest_idle.set(max(0.0, now - float(oldest[0][1])) if oldest else 0.0)
        lock_ms = max(50, int(self._interval * 1000 * 0.9))
        if not await self._redis.set(self._keys.sweeper_lock(), self._owner, nx=True, px=lock_ms):
            return 0
        cutoff = now - self._idle
        ended = 0
        for user_id, session_id in await self._sessions.idle(cutoff, self._batch):
            result = await self._sessions.end(user_id, session_id, idle_cutoff=cutoff)
            if result is None:
                meta = await self._sessions.meta(user_id, session_id)
                if meta is None:
                    await self._sessions.forget_activity(user_id, session_id)  # stale index entry
                    continue
                if meta.state != "ended" or meta.last_activity > cutoff - max(self._idle, 300.0):
                    continue
                # Ended long ago and still here: announce again (archiving is idempotent).
                result = Ended(meta.version, meta.org_id, meta.last_request_id, meta.last_trace_id)
            event = SessionEvent(
                event="session.finished",
                # The last chat's ids: one request can be followed from the gateway to the archive.
                request_id=result.last_request_id or f"sweep-{uuid.uuid4().hex[:12]}",
                user_id=user_id,
                org_id=result.org_id,
                session_id=session_id,
                version=result.version,
                at=time.time(),
                trace_id=result.last_trace_id,
            )
            await publish_session_event(self._events, event)
            self._metrics.swept.inc()
            ended += 1
        if ended:
            log.info("idle_sessions_ended", count=ended)
        return ended
