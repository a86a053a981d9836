"""The envelope of every message a service publishes: AMQP properties and tracing headers, built in
one place (:func:`envelope`) and sent by one call (:func:`publish`).

Every body is JSON (``content_type``), carries its contract ``type`` as the AMQP ``type``, and,
when it belongs to one request, the request id and the caller's trace id as headers
(``x-request-id``, ``x-trace-id``) so it can be followed across hops without decoding it.
Persistence, expiry and the reply address are the producer's choice and are always explicit.
"""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractExchange, HeadersType

from broker.messages import HEADER_REQUEST_ID, HEADER_TRACE_ID

__all__ = ["envelope", "publish"]

JSON = "application/json"


def envelope(
    body: bytes,
    *,
    type: str,
    persistent: bool,
    request_id: str | None = None,
    trace_id: str = "",
    correlation_id: str | None = None,
    message_id: str | None = None,
    reply_to: str | None = None,
    expiration: float | None = None,
    timestamp: float | None = None,
    headers: HeadersType | None = None,
    user_id: str | None = None,
) -> aio_pika.Message:
    """The message for ``body``: ``expiration`` in seconds (the broker drops it after that),
    ``headers`` beyond the tracing ones (which are set whenever ``request_id`` is given).
    ``user_id`` must be the publishing connection's RabbitMQ user: the broker refuses a message
    that claims another, so a consumer can trust it (the worker does, to authorize requests)."""
    mode = aio_pika.DeliveryMode.PERSISTENT if persistent else aio_pika.DeliveryMode.NOT_PERSISTENT
    all_headers: HeadersType = {}
    if request_id is not None:
        all_headers[HEADER_REQUEST_ID] = request_id
        all_headers[HEADER_TRACE_ID] = trace_id
    if headers:
        all_headers.update(headers)
    return aio_pika.Message(
        body,
        content_type=JSON,
        type=type,
        correlation_id=correlation_id,
        message_id=message_id,
        reply_to=reply_to or None,
        expiration=expiration,
        timestamp=timestamp,
        headers=all_headers or None,
        delivery_mode=mode,
        user_id=user_id,
    )


async def publish(
    exchange: AbstractExchange,
    routing_key: str,
    message: aio_pika.Message,
    *,
    mandatory: bool = False,
    timeout: float | None = None,
) -> None:
    """Publish ``message`` (from :func:`envelope`). ``mandatory`` is off unless asked for: with it,
    RabbitMQ answers every unroutable message with a ``basic.return`` (a reply whose requester has
    gone, say). On a channel with publisher confirms this returns once the broker has the message
    (a nack raises ``DeliveryError``); without, once it is written to the connection."""
    await exchange.publish(message, routing_key=routing_key, mandatory=mandatory, timeout=timeout)
