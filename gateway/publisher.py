"""Publishing ChatRequests (with publisher confirms, for load shedding) and Cancels (the broker's
fanout for running generations, and the Redis marker for requests still waiting in the queue)."""

from __future__ import annotations

import time

import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange
from aio_pika.exceptions import DeliveryError, PublishError
from aiormq.exceptions import AMQPError, ChannelInvalidStateError

from broker.envelope import envelope, publish
from broker.messages import (
    CANCEL,
    CHAT_REQUEST,
    EMBED_REQUEST,
    RESUME,
    Cancel,
    ChatRequest,
    EmbedRequest,
    Resume,
    encoder,
)
from broker.topology import REQUEST_ROUTING_KEY
from common.cancels import CancelMarkers

log = structlog.get_logger(__name__)


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
        markers: CancelMarkers,
        *,
        timeout: float,
        publisher: str,
    ) -> None:
        self._channel = confirm_channel
        # The connection's RabbitMQ user, set as every request's ``user_id`` property: the broker
        # checks it, and the worker trusts the identity a request claims only from its publishers.
        self._publisher = publisher
        self._requests = requests
        self._cancel = cancel
        self._markers = markers
        self._timeout = timeout

    async def publish_request(self, request: ChatRequest | EmbedRequest, reply_to: str | None) -> None:
        """Publish and await the broker's confirm; a nack (reject-publish) raises QueueFull."""
        ttl_ms = max(1, int((request.deadline - time.time()) * 1000))
        message = envelope(
            encoder.encode(request),
            type=EMBED_REQUEST if isinstance(request, EmbedRequest) else CHAT_REQUEST,
            persistent=True,
            request_id=request.request_id,
            trace_id=request.trace_id,
            correlation_id=request.request_id,
            message_id=request.request_id,
            reply_to=reply_to,
            expiration=ttl_ms / 1000,
            timestamp=request.created_at,
            user_id=self._publisher,
        )
        try:
            await publish(self._requests, REQUEST_ROUTING_KEY, message, mandatory=True, timeout=self._timeout)
        except DeliveryError as exc:
            raise QueueFull("the request queue is full") from exc
        except (TimeoutError, PublishError, AMQPError, ChannelInvalidStateError, ConnectionError) as exc:
            raise BrokerUnavailable(str(exc) or exc.__class__.__name__) from exc

    async def cancel(self, cancel: Cancel, deadline: float) -> None:
        """Tell workers to stop: the fanout reaches a running generation, the marker (kept until
        the request's ``deadline``) a worker that picks the request up later. Best effort: each
        failure is logged, never raised (the request's deadline is the backstop)."""
        try:
            await self.publish_cancel(cancel)
        except Exception as exc:
            log.warning("cancel_publish_failed", request_id=cancel.request_id, error=str(exc))
        try:
            ttl = max(1, int(deadline - time.time()) + 5)
            await self._markers.mark(
                cancel.user_id, cancel.request_id, cancel.reason, ttl=ttl, grace=cancel.grace
            )
        except Exception as exc:
            log.warning("cancel_mark_failed", request_id=cancel.request_id, error=str(exc))

    async def publish_cancel(self, cancel: Cancel) -> None:
        """Broadcast a cancel to every worker; not confirmed (the Redis marker is the backstop)."""
        message = envelope(
            encoder.encode(cancel),
            type=CANCEL,
            persistent=False,
            request_id=cancel.request_id,
            trace_id=cancel.trace_id,
        )
        await publish(self._cancel, "", message)

    async def publish_resume(self, resume: Resume) -> None:
        """Broadcast a Resume on the same control fanout (gateway/resume.py); not confirmed."""
        message = envelope(
            encoder.encode(resume),
            type=RESUME,
            persistent=False,
            request_id=resume.request_id,
            trace_id=resume.trace_id,
        )
        await publish(self._cancel, "", message)
