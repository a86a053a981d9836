"""Talking to workers at queue level, as an integrator does: publish ChatRequests with a reply
queue of one's own and collect every message that comes back."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from helpers import broker_user

from broker.messages import ChatDone, ChatError, ChatRequest, Reply, ReplyBatch, encoder, reply_decoder
from broker.topology import QueueLimits, Topology


def chat_request(request_id: str, user_id: str, prompt: str, *, mode: str | None = None) -> ChatRequest:
    """A request as an integrator writes it; ``mode`` None leaves ``reply_mode`` at its default."""
    now = time.time()
    extra: dict[str, Any] = {} if mode is None else {"reply_mode": mode}
    return ChatRequest(
        request_id=request_id,
        user_id=user_id,
        org_id="org",
        session_id=None,
        prompt=prompt,
        model="llama3.2",
        deadline=now + 30,
        created_at=now,
        record=False,
        **extra,
    )


@dataclass
class Received:
    """What came back on the reply queue: every broker message (AMQP type, correlation id, body)
    and every reply, batches unpacked, by request id in arrival order."""

    messages: list[tuple[str, str | None, Any]] = field(default_factory=list)
    replies: dict[str, list[Reply]] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return sum(len(r) for r in self.replies.values())


class ReplyClient:
    """An integrator's side: its own exclusive reply queue and the request exchange."""

    def __init__(
        self, queue: aio_pika.abc.AbstractQueue, requests: aio_pika.abc.AbstractExchange, publisher: str
    ) -> None:
        self.queue = queue
        self.requests = requests
        self.publisher = publisher  # the connection's RabbitMQ user: every request's user_id property

    @classmethod
    async def open(cls, amqp: Any, namespace: str, *, queue_name: str = "") -> ReplyClient:
        channel = await amqp.channel(publisher_confirms=True)
        queue = await channel.declare_queue(queue_name, exclusive=True)
        requests = await channel.get_exchange(Topology(namespace, QueueLimits()).requests_exchange)
        return cls(queue, requests, broker_user(amqp))

    async def send(self, request: ChatRequest) -> None:
        await self.requests.publish(
            aio_pika.Message(
                encoder.encode(request),
                content_type="application/json",
                reply_to=self.queue.name,
                correlation_id=request.request_id,
                user_id=self.publisher,
            ),
            routing_key="chat",
        )

    async def collect(self, request_ids: set[str], *, timeout: float = 20) -> Received:
        """Every message until each of ``request_ids`` has its done or error."""
        received = Received()
        open_ids = set(request_ids)
        async with asyncio.timeout(timeout), self.queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                body = reply_decoder.decode(message.body)
                received.messages.append((message.type or "", message.correlation_id, body))
                for reply in body.frames if isinstance(body, ReplyBatch) else [body]:
                    received.replies.setdefault(reply.request_id, []).append(reply)
                    if isinstance(reply, ChatDone | ChatError):
                        open_ids.discard(reply.request_id)
                if not open_ids:
                    break
        return received
