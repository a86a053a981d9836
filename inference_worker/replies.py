"""Where a worker's output goes: chunks, done and errors to the asking gateway's reply queue
(by correlation id, not persistent, no confirm awaited: a lost reply is covered by the gateway's
deadline), session events to the events exchange."""

from __future__ import annotations

import time
from typing import Literal

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange

from broker.events import publish_session_event
from broker.messages import (
    HEADER_REQUEST_ID,
    HEADER_TRACE_ID,
    ChatDone,
    ChatError,
    ChatRequest,
    SessionEvent,
    TokenChunk,
    encoder,
)

ReplyKind = Literal["token", "done", "error"]


class ReplyPublisher:
    """Publishes one worker's replies and session events. ``attempt`` is the id of one try at a
    request (a redelivered request is tried again under a new one); it goes out in the replies'
    ``generation`` field."""

    def __init__(self, channel: AbstractChannel, events: AbstractExchange) -> None:
        self._channel = channel
        self._events = events

    async def chunk(self, request: ChatRequest, reply_to: str, attempt: str, seq: int, text: str) -> None:
        chunk = TokenChunk(
            request_id=request.request_id,
            user_id=request.user_id,
            org_id=request.org_id,
            generation=attempt,
            seq=seq,
            content=text,
        )
        await self._reply(request, reply_to, encoder.encode(chunk), "token")

    async def done(self, request: ChatRequest, reply_to: str, done: ChatDone) -> None:
        await self._reply(request, reply_to, encoder.encode(done), "done")

    async def error(self, request: ChatRequest, reply_to: str, attempt: str, code: str, text: str) -> None:
        error = ChatError(
            request_id=request.request_id,
            user_id=request.user_id,
            org_id=request.org_id,
            generation=attempt,
            error=code,
            message=text,
        )
        await self._reply(request, reply_to, encoder.encode(error), "error")

    async def session_event(
        self, request: ChatRequest, version: int, kind: Literal["session.updated", "session.spilled"]
    ) -> None:
        assert request.session_id
        event = SessionEvent(
            event=kind,
            request_id=request.request_id,
            user_id=request.user_id,
            org_id=request.org_id,
            session_id=request.session_id,
            version=version,
            at=time.time(),
            trace_id=request.trace_id,
        )
        await publish_session_event(self._events, event)

    async def _reply(self, request: ChatRequest, reply_to: str, body: bytes, kind: ReplyKind) -> None:
        if not reply_to:
            return  # an async job: nobody streams it; the outcome goes to the job record
        await self._channel.default_exchange.publish(
            aio_pika.Message(
                body,
                content_type="application/json",
                correlation_id=request.request_id,
                type=kind,
                headers={HEADER_REQUEST_ID: request.request_id, HEADER_TRACE_ID: request.trace_id},
                delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            ),
            routing_key=reply_to,
            mandatory=False,
        )
