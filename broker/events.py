"""Publishing session events on the events topic exchange (routing key = event name)."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractExchange

from broker.messages import HEADER_REQUEST_ID, HEADER_TRACE_ID, SessionEvent, encoder


async def publish_session_event(exchange: AbstractExchange, event: SessionEvent) -> None:
    """Persistent; on a channel with publisher confirms this returns once the broker has it."""
    await exchange.publish(
        aio_pika.Message(
            encoder.encode(event),
            content_type="application/json",
            type=event.event,
            headers={HEADER_REQUEST_ID: event.request_id, HEADER_TRACE_ID: event.trace_id},
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=event.event,
        mandatory=False,
    )
