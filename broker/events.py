"""Publishing session events and usage events on the events topic exchange (routing key = event
name)."""

from __future__ import annotations

import time
from typing import Literal

from aio_pika.abc import AbstractExchange

from broker.envelope import envelope, publish
from broker.messages import ChatRequest, GenerationFinished, SessionEvent, UsageBatch, encoder
from broker.topology import EVENT_GENERATION_FINISHED, EVENT_USAGE_BATCH


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


UsageOutcome = Literal["done", "cancelled", "failed", "expired"]


def generation_finished(
    request: ChatRequest,
    outcome: UsageOutcome,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    started: float,
) -> GenerationFinished:
    """The usage report of ``request``'s generation (the ledger's input)."""
    now = time.time()
    return GenerationFinished(
        request_id=request.request_id,
        user_id=request.user_id,
        org_id=request.org_id,
        key_id=request.key_id,
        api="job" if request.job_id else request.api,
        model=request.model,
        outcome=outcome,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        duration_ms=round(max(0.0, now - started) * 1000, 1),
        finished_at=now,
        trace_id=request.trace_id,
    )


async def publish_generation_finished(exchange: AbstractExchange, event: GenerationFinished) -> None:
    """Persistent and, on a confirming channel, confirmed: published before the request is acked."""
    message = envelope(
        encoder.encode(event),
        type=EVENT_GENERATION_FINISHED,
        persistent=True,
        request_id=event.request_id,
        trace_id=event.trace_id,
    )
    await publish(exchange, EVENT_GENERATION_FINISHED, message)


async def publish_usage(exchange: AbstractExchange, events: list[GenerationFinished]) -> None:
    """The usage of several generations in one persistent message (a single event stays a
    ``generation.finished`` message); on a confirming channel this returns once the broker has it."""
    if len(events) == 1:
        await publish_generation_finished(exchange, events[0])
        return
    first = events[0]
    message = envelope(
        encoder.encode(UsageBatch(events=events)),
        type=EVENT_USAGE_BATCH,
        persistent=True,
        request_id=first.request_id,
        trace_id=first.trace_id,
    )
    await publish(exchange, EVENT_GENERATION_FINISHED, message)
