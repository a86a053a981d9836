"""Connecting to RabbitMQ: bounded retries at start-up, then aio-pika's robust reconnects; how
many messages wait in a queue."""

from __future__ import annotations

from collections.abc import Iterable

import aio_pika
import structlog
from aio_pika.abc import AbstractConnection, AbstractRobustConnection
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
