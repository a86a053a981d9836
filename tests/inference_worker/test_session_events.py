"""``session.updated`` events are opt-in (``SESSION_UPDATED_EVENTS``): one persistent broker message
per recorded chat that nothing in the system consumes is not sent by default; with the setting on,
each recorded chat announces the session's new version, as the AsyncAPI document describes."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from reply_support import ReplyClient, chat_request

from broker.messages import SessionEvent
from broker.topology import EVENT_SESSION_UPDATED, QueueLimits, Topology


async def _events_queue(amqp: Any, namespace: str) -> Any:
    channel = await amqp.channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(Topology(namespace, QueueLimits()).events_exchange, routing_key=EVENT_SESSION_UPDATED)
    return queue


async def _recorded_chat(amqp: Any, namespace: str, request_id: str) -> None:
    client = await ReplyClient.open(amqp, namespace)
    request = msgspec.structs.replace(
        chat_request(request_id, "events-user", "remember this"), session_id=f"s-{request_id}", record=True
    )
    await client.send(request)
    await client.collect({request.request_id})


async def _drain(queue: Any) -> list[SessionEvent]:
    await asyncio.sleep(0.3)  # the event is published before the done; let it land
    events = []
    while (message := await queue.get(fail=False, no_ack=True)) is not None:
        events.append(msgspec.json.decode(message.body, type=SessionEvent))
    return events


async def test_no_session_updated_event_by_default(worker: Any, amqp: Any, namespace: str) -> None:
    queue = await _events_queue(amqp, namespace)
    await _recorded_chat(amqp, namespace, "events-off-0001")
    assert await _drain(queue) == []


async def test_session_updated_events_when_configured(worker_factory: Any, amqp: Any, namespace: str) -> None:
    await worker_factory(SESSION_UPDATED_EVENTS="true")
    queue = await _events_queue(amqp, namespace)
    await _recorded_chat(amqp, namespace, "events-on-0001")
    [event] = await _drain(queue)
    assert (event.event, event.session_id, event.version) == ("session.updated", "s-events-on-0001", 1)
