"""Publishing ChatRequests (with publisher confirms, for load shedding) and Cancels."""

from __future__ import annotations

import time

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange
from aio_pika.exceptions import DeliveryError, PublishError
from aiormq.exceptions import AMQPError, ChannelInvalidStateError

from broker.messages import (
    CANCEL,
    CHAT_REQUEST,
    HEADER_REQUEST_ID,
    HEADER_TRACE_ID,
    Cancel,
    ChatRequest,
    encoder,
)
from broker.topology import REQUEST_ROUTING_KEY


class NotQueued(Exception):
    """The request was not queued; callers answer 503 with ``Retry-After`` and this ``code``."""

    code = "not_queued"


class QueueFull(NotQueued):
    """The broker refused the request (queue at its length limit): shed load."""

    code = "queue_full"


class BrokerUnavailable(NotQueued):
    """The request could not be handed to the broker at all."""

    code = "broker_unavailable"


class RequestPublisher:
    def __init__(
        self,
        confirm_channel: AbstractChannel,
        requests: AbstractExchange,
        cancel: AbstractExchange,
        *,
        timeout: float,
    ) -> None:
        self._channel = confirm_channel
        self._requests = requests
        self._cancel = cancel
        self._timeout = timeout

    async def publish_request(self, request: ChatRequest, reply_to: str | None) -> None:
        """Publish and await the broker's confirm; a nack (reject-publish) raises QueueFull."""
        ttl_ms = max(1, int((request.deadline - time.time()) * 1000))
        message = aio_pika.Message(
            encoder.encode(request),
            content_type="application/json",
            type=CHAT_REQUEST,
            correlation_id=request.request_id,
            message_id=request.request_id,
            reply_to=reply_to or None,
            expiration=ttl_ms / 1000,
            timestamp=request.created_at,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={HEADER_REQUEST_ID: request.request_id, HEADER_TRACE_ID: request.trace_id},
        )
        try:
            await self._requests.publish(
                message, routing_key=REQUEST_ROUTING_KEY, mandatory=True, timeout=self._timeout
            )
        except DeliveryError as exc:
            raise QueueFull("the request queue is full") from exc
        except (TimeoutError, PublishError, AMQPError, ChannelInvalidStateError, ConnectionError) as exc:
            raise BrokerUnavailable(str(exc) or exc.__class__.__name__) from exc

    async def publish_cancel(self, cancel: Cancel) -> None:
        """Broadcast a cancel to every worker; not confirmed (the Redis marker is the backstop)."""
        await self._cancel.publish(
            aio_pika.Message(
                encoder.encode(cancel),
                content_type="application/json",
                type=CANCEL,
                headers={HEADER_REQUEST_ID: cancel.request_id, HEADER_TRACE_ID: cancel.trace_id},
            ),
            routing_key="",
            mandatory=False,
        )
