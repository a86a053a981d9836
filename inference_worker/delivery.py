"""Settling a request message: the one place a worker acks or rejects it.

Like aio-pika's ``message.process()``, :func:`settled` is an ``async with`` block around the whole
handling of one message, and its outcome decides the settlement, exactly once:

- the block ends normally -> **ack**: the request was answered (done or error published to the
  client), or nobody waits for it any more (cancelled, an async job recorded);
- :class:`DeadLetter` raised in the block -> **reject without requeue**: the message can never be
  handled (not a ChatRequest, nowhere to answer); it goes to the dead-letter queue;
- anything else, ``CancelledError`` included -> **reject with requeue**, and the exception goes
  on: the client could not be told the outcome (publishing the error reply failed too), or the
  worker is shutting down past its grace period. The request is redelivered, to this or another
  worker, under a new attempt id (the gateway hides the restart if nothing reached the client
  yet); a request that keeps failing is dead-lettered by the queue's delivery limit
  (``REQUEST_DELIVERY_LIMIT``), and one past its deadline is answered ``deadline_exceeded``.

If the channel is gone when settling, nothing can be sent: RabbitMQ requeues every unacked message
of a closed channel by itself, which is the requeue outcome.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Literal

import structlog
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

log = structlog.get_logger(__name__)

__all__ = ["DeadLetter", "Outcome", "settled"]

Outcome = Literal["ack", "requeue", "dead_letter"]


class DeadLetter(Exception):
    """Raised inside :func:`settled`: reject the message to the dead-letter exchange, for good."""


@asynccontextmanager
async def settled(
    message: AbstractIncomingMessage, on_settled: Callable[[Outcome], None] = lambda outcome: None
) -> AsyncIterator[None]:
    """Ack, requeue or dead-letter ``message`` by how the block ends (see the module docstring);
    ``on_settled`` is told which (a metric). :class:`DeadLetter` is swallowed, anything else is
    re-raised after the reject."""
    try:
        yield
    except DeadLetter:
        await _settle(message, "dead_letter", on_settled)
    except BaseException:
        await _settle(message, "requeue", on_settled)
        raise
    else:
        await _settle(message, "ack", on_settled)


async def _settle(
    message: AbstractIncomingMessage, outcome: Outcome, on_settled: Callable[[Outcome], None]
) -> None:
    try:
        if outcome == "ack":
            await message.ack()
        else:
            await message.reject(requeue=outcome == "requeue")
    except (AMQPError, ChannelInvalidStateError, ConnectionError) as exc:
        # The channel closed: the broker requeues the message itself.
        log.warning("message_not_settled", outcome=outcome, error=repr(exc))
        outcome = "requeue"
    on_settled(outcome)
