"""Connecting to RabbitMQ: bounded retries at start-up, then aio-pika's robust reconnects; whether
a connection can carry traffic right now; how many messages wait in a queue."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import aio_pika
import structlog
from aio_pika import RobustConnection
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractRobustConnection
from aiormq.exceptions import AMQPConnectionError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from broker.topology import QueueLimits, Topology
from common.settings import CommonSettings

log = structlog.get_logger(__name__)

RECONNECT_INTERVAL_SECONDS = 1.0


def topology_for(settings: CommonSettings) -> Topology:
    """Every service must build the same topology, or declarations fail with PRECONDITION_FAILED."""
    return Topology(
        settings.broker_prefix,
        QueueLimits(max_length=settings.queue_max_length, delivery_limit=settings.queue_delivery_limit),
    )


class ServiceConnection(RobustConnection):
    """aio-pika's robust connection, knowing whether it is usable: a robust connection that lost
    its broker is not ``is_closed`` (it is reconnecting), so readiness cannot ask that. Usable
    means connected and, after a reconnect, every channel restored (aio-pika signals the connection
    first, then restores the channels, then calls ``reconnect_callbacks``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
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
