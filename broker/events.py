"""Publishing session events on the events topic exchange (routing key = event name)."""

from __future__ import annotations

import time
from typing import Literal

from aio_pika.abc import AbstractExchange

from broker.envelope import envelope, publish
from broker.messages import ChatRequest, SessionEvent, encoder


def session_event(
    request: ChatRequest, kind: Literal["session.updated", "session.spilled"], version: int
) -> SessionEvent:
    """What a worker announces after recording ``request``'s turns (version: the session's, now)."""
    assert request.session_id
    return SessionEvent(
        event=kind,
        request_id=request.request_id,
        user_id=request.user_id,
        org_id=request.org_id,
        session_id=request.session_id,
        version=version,
        at=time.time(),
        trace_id=request.trace_id,
    )


async def publish_session_event(exchange: AbstractExchange, event: SessionEvent) -> None:
    """Persistent; on a channel with publisher confirms this returns once the broker has it."""
    message = envelope(
        encoder.encode(event),
        type=event.event,
        persistent=True,
        request_id=event.request_id,
        trace_id=event.trace_id,
    )
    await publish(exchange, event.event, message)
