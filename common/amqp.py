"""Connecting to RabbitMQ: bounded retries at start-up, then aio-pika's robust reconnects; whether
a connection can carry traffic right now; how many messages wait in a queue.

Every connection made here writes to its socket through a :class:`CoalescingWriter`: aiormq
writes each outgoing frame set (a publish, an ack) with its own ``send()``, and on the loopback
and a busy box those system calls were the largest single cost of a worker and a gateway under
load (py-spy, README "Benchmarks"). Frames written during one turn of the event loop now leave
in one ``send()`` at the end of that turn, in order; nothing waits longer than that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import aio_pika
import structlog
from aio_pika import RobustConnection
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractRobustConnection
from aiormq.connection import TransportFactory
from aiormq.exceptions import AMQPConnectionError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential
from yarl import URL

from broker.topology import QueueLimits, Topology
from common.settings import CommonSettings

log = structlog.get_logger(__name__)

RECONNECT_INTERVAL_SECONDS = 1.0
# A CoalescingWriter holding this much writes it at once rather than at the end of the turn.
FLUSH_AT_BYTES = 256 * 1024


def topology_for(settings: CommonSettings) -> Topology:
    """Every service must build the same topology, or declarations fail with PRECONDITION_FAILED."""
    return Topology(
        settings.broker_prefix,
        QueueLimits(max_length=settings.queue_max_length, delivery_limit=settings.queue_delivery_limit),
    )


class CoalescingWriter(asyncio.StreamWriter):
    """A stream writer whose writes of one event-loop turn go out as one ``transport.write``.

    ``write`` only buffers and schedules the flush (``call_soon``: after the callbacks already
    due in this turn, so every frame produced by them joins); ``close`` flushes first. Order is
    kept, and so is back-pressure: ``drain`` still waits while the transport is paused."""

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        protocol: asyncio.StreamReaderProtocol,
        reader: asyncio.StreamReader,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(transport, protocol, reader, loop)
        self._event_loop = loop
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._flush_scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._pending.append(bytes(data))
        self._pending_bytes += len(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._event_loop.call_soon(self._flush)

    def writelines(self, data: Iterable[bytes | bytearray | memoryview]) -> None:
        for item in data:
            self.write(item)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending = self._pending
        if not pending:
            return
        self._pending, self._pending_bytes = [], 0
        self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    async def drain(self) -> None:
        # aiormq drains after every frame set (each publish and ack waits for it): flushing here
        # would make one send() per frame again. What is buffered leaves at the end of this turn;
        # back-pressure (a paused transport) still applies, and a large backlog goes now.
        if self._pending_bytes >= FLUSH_AT_BYTES:
            self._flush()
        await super().drain()

    def close(self) -> None:
        self._flush()
        super().close()


class CoalescingTransportFactory(TransportFactory):
    """aiormq's plain-TCP transport (``asyncio.open_connection``), with a :class:`CoalescingWriter`."""

    async def create(self, url: URL, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        kwargs.pop("ssl_context_provider", None)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            # aiormq has filled in the scheme's port.
            transport, _ = await loop.create_connection(
                lambda: protocol, url.host or "localhost", url.port or 5672, **kwargs
            )
        except OSError as exc:
            raise AMQPConnectionError(*exc.args) from exc
        return reader, CoalescingWriter(transport, protocol, reader, loop)


class ServiceConnection(RobustConnection):
    """aio-pika's robust connection, knowing whether it is usable: a robust connection that lost
    its broker is not ``is_closed`` (it is reconnecting), so readiness cannot ask that. Usable
    means connected and, after a reconnect, every channel restored (aio-pika signals the connection
    first, then restores the channels, then calls ``reconnect_callbacks``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.url.scheme == "amqp":  # amqps keeps aiormq's TLS transport
            self.kwargs["transport_factory"] = CoalescingTransportFactory()
        self._lost = False
        self.close_callbacks.add(self._on_lost)
        self.reconnect_callbacks.add(self._on_restored)

    def _on_lost(self, sender: object, exc: BaseException | None = None) -> None:
        self._lost = True

    def _on_restored(self, sender: object) -> None:
        self._lost = False

    @property
    def usable(self) -> bool:
        transport = self.transport
        return (
            not self.is_closed
            and not self._lost
            and self.connected.is_set()
            and transport is not None
            and not transport.connection.is_closed
        )


def broker_usable(connection: AbstractConnection | None, channels: Iterable[AbstractChannel] = ()) -> bool:
    """True when ``connection`` can carry traffic now (for readiness probes): open and not between
    a lost broker and a completed reconnect, and each of ``channels`` (the ones the caller cannot
    work without) open."""
    if connection is None or connection.is_closed or not connection.connected.is_set():
        return False
    if isinstance(connection, ServiceConnection):
        if not connection.usable:
            return False
    elif connection.transport is None or connection.transport.connection.is_closed:
        return False
    return not any(channel.is_closed for channel in channels)


async def connect(url: str, *, client_name: str, attempts: int = 10) -> AbstractRobustConnection:
    """Connect with exponential back-off; give up after ``attempts`` so a bad URL fails start-up."""
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.2, max=5),
        retry=retry_if_exception_type((AMQPConnectionError, ConnectionError, OSError)),
        reraise=True,
    ):
        with attempt:
            if attempt.retry_state.attempt_number > 1:
                log.warning("amqp_connect_retry", attempt=attempt.retry_state.attempt_number)
            return await aio_pika.connect_robust(
                url,
                client_properties={"connection_name": client_name},
                # aio-pika waits 5 s by default; a gateway cut off from the broker refuses chats.
                reconnect_interval=RECONNECT_INTERVAL_SECONDS,
                connection_class=ServiceConnection,
            )
    raise AssertionError("unreachable")


async def ready_messages(connection: AbstractConnection, queues: Iterable[str]) -> int:
    """How many messages wait in ``queues``, not yet handed to any consumer (a passive declare's
    ``message_count``; for quorum queues too). On a channel of its own: a failed passive declare
    closes its channel, which must not be a consumer's."""
    channel = await connection.channel()
    try:
        total = 0
        for name in queues:
            queue = await channel.declare_queue(name, passive=True)
            declared = queue.declaration_result
            total += declared.message_count or 0
        return total
    finally:
        await channel.close()
