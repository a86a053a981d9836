"""Reply routing: one reply queue per gateway process, demultiplexed by correlation id.

Workers publish TokenChunk/ChatDone/ChatError to this process's queue with
``correlation_id = request_id``; each waiting request owns an ``asyncio.Queue`` registered here.
The queue is named and outlives a dropped broker connection (see
:meth:`broker.topology.Topology.reply_queue_arguments`), so streams in flight survive a reconnect;
it is consumed with no-ack: replies are transient and a lost gateway loses its clients anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import msgspec
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from broker.messages import Reply, reply_decoder
from broker.topology import Topology
from common.runtime import within

log = structlog.get_logger(__name__)


class ReplyRouter:
    def __init__(self, channel: AbstractChannel, queue_name: str, *, expires_seconds: float) -> None:
        self._channel = channel
        self._queue_name = queue_name
        self._expires = expires_seconds
        self._queue: AbstractQueue | None = None
        self._pending: dict[str, asyncio.Queue[Reply]] = {}
        self.unroutable = 0

    async def start(self) -> None:
        self._queue = await self._channel.declare_queue(
            self._queue_name, durable=True, arguments=Topology.reply_queue_arguments(self._expires)
        )
        await self._queue.consume(self._on_message, no_ack=True)

    async def close(self) -> None:
        """Delete the queue now that this process reads no more replies (expiry would, later)."""
        queue, self._queue = self._queue, None
        if queue is None:
            return
        try:
            await within(5, "reply_queue_delete", queue.delete(if_unused=False, if_empty=False))
        except Exception as exc:  # the broker is away: x-expires removes the queue instead
            log.warning("reply_queue_delete_failed", queue=self._queue_name, error=repr(exc))

    @property
    def address(self) -> str:
        """The ``reply_to`` value workers publish to."""
        if self._queue is None:
            raise RuntimeError("ReplyRouter.start() was not awaited")
        return self._queue.name

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @contextmanager
    def subscribe(self, request_id: str) -> Iterator[asyncio.Queue[Reply]]:
        """Register before publishing the request, so no reply can arrive unrouted."""
        queue: asyncio.Queue[Reply] = asyncio.Queue()
        self._pending[request_id] = queue
        try:
            yield queue
        finally:
            self._pending.pop(request_id, None)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        target = self._pending.get(message.correlation_id or "")
        if target is None:
            # The client is gone (disconnect or deadline); late replies are expected then.
            self.unroutable += 1
            return
        try:
            reply = reply_decoder.decode(message.body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            log.error("reply_undecodable", correlation_id=message.correlation_id, error=str(exc))
            return
        target.put_nowait(reply)


class Heartbeat:
    """Nothing arrived for a heartbeat interval (the SSE writer sends a comment)."""


HEARTBEAT = Heartbeat()


class Interrupted(Exception):
    """A generation restarted (worker died) after part of the answer reached the client."""


class DeadlineExceeded(Exception):
    pass


class ReplyCursor:
    """Reads one request's replies in order and hides transparent restarts.

    A redelivered request starts a new ``generation``. If the client has been sent nothing of the
    old one yet, the cursor switches to the new one silently (``reset`` is reported so a buffering
    caller drops what it collected); otherwise it raises :class:`Interrupted`.
    """

    def __init__(self, queue: asyncio.Queue[Reply], *, deadline_monotonic: float, heartbeat: float) -> None:
        self._queue = queue
        self._deadline = deadline_monotonic
        self._heartbeat = heartbeat
        self.generation: str | None = None
        self.delivered = False
        self.restarts = 0
        self.reset = False

    async def next(self) -> Reply | Heartbeat:
        loop = asyncio.get_running_loop()
        remaining = self._deadline - loop.time()
        if remaining <= 0:
            raise DeadlineExceeded
        if self._queue.empty():
            # asyncio.timeout, not wait_for: no extra task per reply (this runs once per chunk).
            try:
                async with asyncio.timeout(min(remaining, self._heartbeat)):
                    reply = await self._queue.get()
            except TimeoutError:
                if loop.time() >= self._deadline:
                    raise DeadlineExceeded from None
                return HEARTBEAT
        else:
            reply = self._queue.get_nowait()
        if self.generation is None:
            self.generation = reply.generation
        elif reply.generation != self.generation:
            if self.delivered:
                raise Interrupted
            self.generation = reply.generation
            self.restarts += 1
            self.reset = True
        return reply
